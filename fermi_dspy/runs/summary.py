"""`RunSummary`: what a run did, as returned by `personalize_users` and written to summary.json."""

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fermi_dspy.runs.estimate import RunEstimate

COMPLETED, BUDGET, INTERRUPTED = "completed", "budget", "interrupted"


@dataclass(frozen=True)
class UserFailure:
    """A user whose last attempt failed.

    Attributes:
        user_id: The user.
        reason: What failed (secrets removed).
        error_type: The exception class name.
        attempts: Attempts so far, over all invocations (interrupted ones included).
        calls_spent: LM calls its attempts made (failed and interrupted ones).
    """

    user_id: str
    reason: str
    error_type: str
    attempts: int
    calls_spent: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunSummary:
    """The state of a run after one invocation.

    Attributes:
        run_dir: The run directory.
        status: "completed" (every user finished, failed or was skipped), "budget" (the run's budget left some users
            unstarted) or "interrupted" (stopped; re-run the same command to resume).
        users: Users in the run (bad records excluded).
        done: Users finished, budget-limited and unparseable ones included.
        budget_limited: Finished users whose work was cut short by their allotment.
        failed: Users whose last attempt failed.
        not_started: Users the budget left no calls (or USD) for.
        pending: Users not run because the run was interrupted.
        skipped: Users left out as bad records.
        already_done: Users finished before this invocation (skipped, not paid again).
        bad_records: Problems found in the input (skipped or refused, see input_problems.json).
        usage: LM calls, failed calls, tokens and USD of the whole run so far, every attempt included (failed,
            stopped and killed ones, from the users' call ledgers), with the replies served from DSPy's cache
            (cache_hits, and cached_tokens: what they would have cost; they are not in the token counts).
        this_invocation: Users run, LM calls, wall seconds and users per minute of this invocation.
        failures: The failed users, with reasons.
        not_started_users: Ids of the users that got no budget (at most 100 listed).
        estimate: The estimate made before this invocation started.
        notes: Warnings worth reading.
        unparseable: Finished users none of whose task-LM replies could be parsed (their scores mean nothing).
        unparseable_users: Their ids (at most 100 listed).
    """

    run_dir: Path
    status: str
    users: int
    done: int
    budget_limited: int
    failed: int
    not_started: int
    pending: int
    skipped: int
    already_done: int
    bad_records: int
    usage: dict[str, Any]
    this_invocation: dict[str, Any]
    failures: tuple[UserFailure, ...] = ()
    not_started_users: tuple[str, ...] = ()
    estimate: RunEstimate | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    unparseable: int = 0
    unparseable_users: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Every user of the run finished (possibly budget-limited) with replies that could be parsed."""
        return self.done == self.users and not self.unparseable

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "status": self.status,
            "users": self.users,
            "done": self.done,
            "budget_limited": self.budget_limited,
            "unparseable": self.unparseable,
            "failed": self.failed,
            "not_started": self.not_started,
            "pending": self.pending,
            "skipped_bad_records": self.skipped,
            "already_done": self.already_done,
            "bad_records": self.bad_records,
            "usage": self.usage,
            "this_invocation": self.this_invocation,
            "failures": [f.to_dict() for f in self.failures],
            "not_started_users": list(self.not_started_users),
            "unparseable_users": list(self.unparseable_users),
            "estimate": self.estimate.to_dict() if self.estimate else None,
            "notes": list(self.notes),
        }

    def format(self) -> str:
        """A short report for people."""
        inv = self.this_invocation
        cost = self.usage.get("cost")
        hits = self.usage.get("cache_hits", 0)
        cached = (f", {hits:,} from DSPy's cache ({self.usage.get('cached_tokens', 0):,} tokens not paid again)"
                  if hits else "")
        lines = [
            f"Run {self.run_dir}: {self.status}",
            f"  users {self.users}: {self.done} done ({self.budget_limited} budget-limited), {self.failed} failed, "
            f"{self.not_started} without budget, {self.pending} pending; {self.skipped} skipped as bad records",
            f"  this invocation: {inv.get('users_run', 0)} users in {inv.get('seconds', 0.0):.1f} s "
            f"({inv.get('users_per_minute', 0.0):.2f} users/min), {self.already_done} already done",
            f"  LM calls {self.usage.get('calls', 0):,} ({self.usage.get('failed_calls', 0):,} failed{cached}), tokens "
            f"{self.usage.get('total_tokens', 0):,}" + (f", ${cost:.4f}" if cost is not None else ""),
        ]
        if self.unparseable:
            lines.append(f"  {self.unparseable} user(s) unparseable: no reply of the task LM could be parsed, so their "
                         f"scores mean nothing (check the model and its chat template): "
                         f"{', '.join(self.unparseable_users[:20])}")
        if self.failures:
            lines.append(f"  failures ({len(self.failures)}):")
            lines.extend(f"    {f.user_id}: {f.reason} (attempts: {f.attempts})" for f in self.failures[:50])
            if len(self.failures) > 50:
                lines.append(f"    ... and {len(self.failures) - 50} more in failures.json")
        if self.bad_records:
            lines.append(f"  {self.bad_records} bad record(s) in the input: see input_problems.json")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)
