"""Planning an invocation: each user's state (finished, failed, to run), what its earlier attempts spent (its call
ledger), its LM-call allotment, and the estimate of what is left to run."""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fermi_dspy.accounting import LMUsage
from fermi_dspy.runs.budget import call_allotments
from fermi_dspy.runs.errors import ManifestMismatchError
from fermi_dspy.runs.estimate import RunEstimate, price_estimate
from fermi_dspy.runs.jobs import UserData, UserJob, WorkEstimate
from fermi_dspy.runs.layout import RunDir
from fermi_dspy.runs.ledger import LedgerTotals
from fermi_dspy.runs.lms import LMConfig
from fermi_dspy.runs.manifest import other_settings_error
from fermi_dspy.runs.settings import RunSettings

logger = logging.getLogger(__name__)

_ESTIMATE_SAMPLE = 200


@dataclass
class PlannedUser:
    """One user's state in this invocation: its result or last failure read from the run directory, what its
    earlier attempts spent (its call ledger), its call bounds and its LM-call allotment."""

    user: UserData
    min_calls: int
    max_calls: int
    result: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    allotment: int | None = None
    ledger: LedgerTotals = field(default_factory=LedgerTotals)
    previous: dict[str, Any] | None = None
    #: The user finished on other input than it has now and the job updates it (`UserJob.updates_changed_users`).
    changed_input: bool = False
    #: Attempts numbered up to this one computed the earlier input's result: they are not charged to the update.
    update_after: int = 0

    def spent_before(self) -> LMUsage:
        """What the user's attempts so far spent (the ledger, or failure.json where it says more)."""
        failure = self.failure or {}
        recorded = LMUsage(int(failure.get("calls_spent") or 0), int(failure.get("failed_calls") or 0),
                           int(failure.get("prompt_tokens") or 0), int(failure.get("completion_tokens") or 0),
                           None if failure.get("cost_spent") is None else float(failure["cost_spent"]))
        return self.ledger.usage(since=self.update_after + 1).at_least(recorded)

    @property
    def calls_spent_before(self) -> int:
        return self.spent_before().calls

    @property
    def attempts_before(self) -> int:
        return max(self.ledger.last_attempt, int((self.failure or {}).get("attempts", 0)))


def plan_users(run_dir: RunDir | None, users: list[UserData], job: UserJob, settings: RunSettings, *,
               identity: Mapping[str, Any] | None = None, fingerprint: str | None = None,
               also_accepted: frozenset[str] = frozenset()) -> list[PlannedUser]:
    """Each user's state (finished, failed, to run) and LM-call allotment; `run_dir` None for a new run.

    A result.json that does not parse or lacks a field counts as missing: the user is run again (the reason is
    logged), and what its attempts spent stays charged. A finished user whose input changed is run again as an update
    when the job updates changed users (its earlier result in `previous`; the attempts that computed it are not
    charged to the update), and refused otherwise.

    Args:
        also_accepted: Fingerprints besides `fingerprint` that finished results may carry (the same settings,
            fingerprinted by an earlier version).

    Raises:
        ManifestMismatchError: A finished user's input data changed, or its result was computed under other settings
            than `fingerprint` (the differences are listed).
    """
    planned = []
    other: list[PlannedUser] = []
    accepted = {fingerprint, *also_accepted}
    for user in users:
        item = PlannedUser(user, *job.call_bounds(user, seed=settings.seed))
        if run_dir is not None:
            item.result, damaged = run_dir.inspect_result(user.user_id)
            item.failure = run_dir.read_failure(user.user_id)
            if damaged:
                logger.warning("%s/result.json %s: user %s is run again.", run_dir.user_path(user.user_id), damaged,
                               user.user_id)
            if item.result is not None and job.redo(item.result.get("result") or {}):
                item.previous, item.result = item.result, None  # checked below like a finished user, then run again
            if item.result is None:
                item.ledger = run_dir.read_ledger(user.user_id)
        finished = item.result or item.previous
        if finished is not None and finished.get("input_sha256") != user.fingerprint():
            if not job.updates_changed_users:
                raise ManifestMismatchError(
                    f"Cannot resume {run_dir.path}: user {user.user_id} finished with other input data than it has "
                    f"now (see {run_dir.user_path(user.user_id)}). Use a new run directory for changed data."
                )
            item.previous, item.result, item.changed_input = finished, None, True
            item.update_after = int(finished.get("attempts") or 0)
            item.ledger = run_dir.read_ledger(user.user_id)
        if finished is not None and fingerprint is not None and finished["run_fingerprint"] not in accepted:
            other.append(item)
        planned.append(item)
    if other:
        first = other[0].result or other[0].previous or {}
        raise other_settings_error(run_dir.path, [p.user.user_id for p in other], first.get("run_identity"),
                                   identity or {}, run_dir.users_path)
    fixed, spent = {}, {}
    for index, item in enumerate(planned):
        if item.result is not None:
            budget = item.result["budget"]
            allotment = budget.get("allotment")
            fixed[index] = allotment if allotment is not None else int(item.result["usage"]["calls"]) + int(
                budget.get("calls_in_failed_attempts", 0))
        elif item.failure is not None and not settings.retry_failed:
            fixed[index] = item.calls_spent_before
        elif item.calls_spent_before:
            spent[index] = item.calls_spent_before
    per_user = settings.max_calls_per_user
    wanted = [per_user if per_user is not None else (p.max_calls if settings.max_calls_per_run else None)
              for p in planned]
    allotments = call_allotments(wanted, run_cap=settings.max_calls_per_run, fixed=fixed, spent=spent)
    for item, allotment in zip(planned, allotments, strict=True):
        item.allotment = allotment
    return planned


def estimate_pending(todo: list[PlannedUser], job: UserJob, settings: RunSettings, task: LMConfig,
                     proposer: LMConfig) -> RunEstimate:
    """Token estimates for a sample of the users to run, scaled to all of them; call counts are exact."""
    sample = todo[:_ESTIMATE_SAMPLE]
    estimates = [job.estimate(p.user, seed=settings.seed) for p in sample]
    notes = []
    if len(todo) > len(sample):
        notes.append(f"tokens estimated on the first {len(sample)} users to run, scaled by their LM calls")
        total = sum(estimates, WorkEstimate())
        per_call = {name: value / max(1, total.calls_max) for name, value in total.to_dict().items()}
        estimates += [_scaled(per_call, item.min_calls, item.max_calls) for item in todo[len(sample):]]
    notes.append("tokens are characters / 4 of the requests DSPy's ChatAdapter sends")
    if settings.engine == "ray" and settings.max_workers is None:
        notes.append("on Ray, as many users run at once as the cluster has CPUs (per ray_cpus_per_user)")
    work = sum(estimates, WorkEstimate())
    usd, usd_max = price_estimate(work, task, proposer)
    if (settings.max_cost_per_user or settings.max_cost_per_run) and usd is None:
        notes.append("USD caps have no effect: DSPy reports no cost for these LMs")
    allotments = [None if p.allotment is None else max(0, p.allotment - p.calls_spent_before) for p in todo]
    capped = None if all(a is None for a in allotments) else sum(
        e.calls_max if a is None else min(e.calls_max, a) for e, a in zip(estimates, allotments, strict=True))
    return RunEstimate(
        users=len(todo), work=work, calls_allowed=capped,
        users_not_started=sum(1 for p, a in zip(todo, allotments, strict=True) if a is not None and a < p.min_calls),
        usd=usd, usd_max=usd_max, concurrency=(settings.max_workers or 1) * settings.num_threads,
        lms={"task": task.spec, "proposer": proposer.spec}, notes=tuple(notes),
    )


def _scaled(per_call: dict[str, float], min_calls: int, max_calls: int) -> WorkEstimate:
    """An estimate for a user with `max_calls` calls, from the sampled users' averages per call."""
    values = {name: round(value * max_calls) for name, value in per_call.items()}
    values.update(calls_max=max_calls, min_calls=min_calls, proposer_calls=max_calls - values["task_calls"])
    return WorkEstimate(**values)


def result_usage(result: Mapping[str, Any]) -> LMUsage:
    """Everything a finished user's result.json accounts for: its attempt, the attempts before it, and the versions
    of the user computed on earlier input (`updated_from`, when a resume updated the user)."""
    budget = result.get("budget") or {}
    earlier = budget.get("earlier_attempts")
    total = LMUsage.from_dict(result.get("usage")) + LMUsage.from_dict(
        earlier if isinstance(earlier, Mapping) else {"calls": budget.get("calls_in_failed_attempts", 0)})
    return total + LMUsage.from_dict((result.get("updated_from") or {}).get("usage"))


def usage_totals(planned: list[PlannedUser], run_dir: RunDir | None = None) -> LMUsage:
    """The run's LM usage: every attempt of every user, finished, failed or interrupted.

    Args:
        planned: The users.
        run_dir: Re-read the ledgers of unfinished users here (to count attempts interrupted in this invocation).
    """
    total = LMUsage()
    for item in planned:
        if item.result is not None:
            total += result_usage(item.result)
            continue
        if item.changed_input and item.previous is not None:  # what computed the earlier input's result
            total += result_usage(item.previous)
        if run_dir is not None:
            item.ledger = run_dir.read_ledger(item.user.user_id)
        total += item.spent_before()
    return total
