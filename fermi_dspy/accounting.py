"""LM-call accounting: how many calls each role made, and their tokens and cost."""

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback


@dataclass(frozen=True)
class LMUsage:
    """LM usage of one role (task or proposer) during one compile.

    Attributes:
        calls: LM calls made (cache hits included; each retry inside the LM client is not a separate call).
        failed_calls: Calls that raised after the client's retries.
        prompt_tokens: Prompt tokens reported by the provider (0 for cache hits).
        completion_tokens: Completion tokens reported by the provider.
        cost: USD cost where DSPy reports one (hosted models through LiteLLM), else None.
    """

    calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}

    def __add__(self, other: "LMUsage") -> "LMUsage":
        cost = None if self.cost is None and other.cost is None else (self.cost or 0.0) + (other.cost or 0.0)
        return LMUsage(
            self.calls + other.calls,
            self.failed_calls + other.failed_calls,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            cost,
        )


class UsageMeter(BaseCallback):
    """Counts the LM calls made under `dspy.context(callbacks=[meter])` and sums tokens of the LMs it tracks.

    Calls are counted by callback (robust across threads and LM copies); tokens and cost are read from the
    histories of the LM copies registered with `track`, which this compile alone uses.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls = 0
        self._failed = 0
        self._lms: list[dspy.BaseLM] = []

    @property
    def calls(self) -> int:
        return self._calls

    def track(self, lm: dspy.BaseLM) -> dspy.BaseLM:
        """Register an LM copy owned by this compile, so its token usage is counted; returns it."""
        with self._lock:
            self._lms.append(lm)
        return lm

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._lock:
            self._calls += 1

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        if exception is not None:
            with self._lock:
                self._failed += 1

    def usage(self) -> LMUsage:
        """The usage so far."""
        with self._lock:
            calls, failed, lms = self._calls, self._failed, list(self._lms)
        return usage_from_histories(lms, calls=calls, failed_calls=failed)


def usage_from_histories(lms: list[dspy.BaseLM], *, calls: int, failed_calls: int) -> LMUsage:
    """An `LMUsage` with the given call counts and the tokens and cost recorded in these LMs' histories."""
    prompt = completion = 0
    costs: list[float] = []
    for lm in lms:
        for entry in list(lm.history):
            usage = entry.get("usage") or {}
            prompt += int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
            completion += int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
            if entry.get("cost") is not None:
                costs.append(float(entry["cost"]))
    return LMUsage(calls, failed_calls, prompt, completion, sum(costs) if costs else None)


class BudgetExhaustedError(RuntimeError):
    """Raised instead of making an LM call that the compile's budget does not allow."""


class CallBudget:
    """A hard cap on LM calls (and on USD cost where DSPy reports it), checked before every single call.

    Args:
        max_calls: Most LM calls allowed; None is no cap.
        max_cost: Most USD allowed; None is no cap. Checked against `cost_so_far()` before each call, so the call
            that crosses the cap is the last one made.
        cost_so_far: Returns the USD spent so far (None when the provider reports no cost).
    """

    def __init__(self, max_calls: int | None = None, max_cost: float | None = None,
                 cost_so_far: Callable[[], float | None] | None = None) -> None:
        self.max_calls = max_calls
        self.max_cost = max_cost
        self.cost_so_far = cost_so_far
        self.used = 0
        self.exhausted = False
        self._lock = threading.Lock()

    def fits(self, calls: int) -> bool:
        """Whether `calls` more calls fit in the call cap."""
        return self.max_calls is None or self.used + calls <= self.max_calls

    def acquire(self) -> None:
        """Take one call from the budget.

        Raises:
            BudgetExhaustedError: The call cap or the cost cap is reached; the call must not be made.
        """
        with self._lock:
            if self.max_calls is not None and self.used >= self.max_calls:
                self.exhausted = True
                raise BudgetExhaustedError(f"the LM-call budget of {self.max_calls} calls is spent")
            if self.max_cost is not None and self.cost_so_far is not None:
                cost = self.cost_so_far()
                if cost is not None and cost >= self.max_cost:
                    self.exhausted = True
                    raise BudgetExhaustedError(f"the cost budget of ${self.max_cost:.4f} is spent (${cost:.4f})")
            self.used += 1


_GUARDED_CLASSES: dict[type, type] = {}


def _guarded_class(cls: type) -> type:
    if cls not in _GUARDED_CLASSES:

        def __call__(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N807
            self._fermi_budget.acquire()
            return cls.__call__(self, *args, **kwargs)

        async def acall(self, *args: Any, **kwargs: Any) -> Any:
            self._fermi_budget.acquire()
            return await cls.acall(self, *args, **kwargs)

        _GUARDED_CLASSES[cls] = type(f"Budgeted{cls.__name__}", (cls,), {"__call__": __call__, "acall": acall})
    return _GUARDED_CLASSES[cls]


def with_budget(lm: dspy.BaseLM, budget: CallBudget) -> dspy.BaseLM:
    """A copy of `lm` whose every call (adapter retries and `lm.copy()`s included) first takes one from `budget`."""
    guarded = lm.copy()
    guarded.__class__ = _guarded_class(type(lm))
    guarded._fermi_budget = budget
    return guarded
