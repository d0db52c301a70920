"""Run budgets: per-user LM-call allotments that can never add up past the run's cap, and a USD ledger.

LM calls are split up front, in user order: user i may make

    min(per-user cap, run cap - what users 0..i-1 were allotted)

calls (the per-user cap defaults to the user's estimated maximum when only a run cap is given). Each user's cap is
enforced call by call inside its job (Fermi's `max_lm_calls`), so however many users run at once, on threads or on
Ray machines, the run can never exceed its cap, and which user gets how much does not depend on scheduling: the
same seed gives the same results with any engine or worker count, and after a resume. Allotments a user leaves
unused are not handed on (that would make results depend on timing). A user whose attempt failed, was stopped or
was killed keeps what it spent (its call ledger records every call as it is made, see `fermi_dspy.runs.ledger`): the
next attempt gets the rest of its allotment.

USD is only known after a call (where DSPy reports it: hosted LiteLLM models), so the run's USD cap is a ledger:
a user starts only while USD is left, reserving at most its per-user cap (default: its estimated maximum), and is
settled with what it actually spent. Each running user can overshoot by the cost of its last call.
"""

from collections.abc import Mapping, Sequence


def call_allotments(
    wanted: Sequence[int | None],
    *,
    run_cap: int | None,
    fixed: Mapping[int, int] | None = None,
    spent: Mapping[int, int] | None = None,
) -> list[int | None]:
    """Per-user LM-call allotments, in user order.

    Args:
        wanted: Per user, the calls it may make on its own (its per-user cap, or its estimate), None for no limit.
        run_cap: The run's cap on LM calls, or None.
        fixed: user index -> calls already charged to that user (finished users keep what they were allotted).
        spent: user index -> calls earlier attempts of that (unfinished) user made; its allotment is never less, so
            the allotments always cover what was spent (a run cap lowered on resume cannot undo spending).

    Returns:
        Per user, its allotment (None: uncapped). With a run cap, the allotments add up to at most `run_cap`.

    Raises:
        ValueError: A run cap together with a user that wants an unlimited number of calls.
    """
    fixed, spent = fixed or {}, spent or {}
    if run_cap is None:
        return [fixed.get(i, w) for i, w in enumerate(wanted)]
    left = run_cap
    allotments: list[int | None] = []
    for index, want in enumerate(wanted):
        if index in fixed:
            granted = fixed[index]
        else:
            if want is None:
                raise ValueError("a run cap on LM calls needs a per-user cap or estimate for every user.")
            granted = max(spent.get(index, 0), min(want, left))
        left -= granted
        allotments.append(granted)
    return allotments


class CostLedger:
    """The run's USD cap: reserve before a user starts, settle when it ends.

    Args:
        cap: The run's USD cap, or None for none.
        spent: USD already spent by earlier invocations of this run.
    """

    def __init__(self, cap: float | None, spent: float = 0.0) -> None:
        self.cap = cap
        self.spent = spent
        self.reserved = 0.0

    def reserve(self, wanted: float | None) -> tuple[bool, float | None]:
        """Reserve USD for a user about to start.

        Args:
            wanted: The user's own cap or estimate (None: no limit of its own).

        Returns:
            (may start, the user's USD cap). Without a run cap, the user's own cap is returned unchanged.
        """
        if self.cap is None:
            return True, wanted
        left = self.cap - self.spent - self.reserved
        if left <= 0:
            return False, 0.0
        granted = left if wanted is None else min(wanted, left)
        self.reserved += granted
        return True, granted

    def settle(self, reserved: float | None, spent: float | None) -> None:
        """Release a user's reservation and record what it spent."""
        if self.cap is not None and reserved is not None:
            self.reserved = max(0.0, self.reserved - reserved)
        self.spent += spent or 0.0
