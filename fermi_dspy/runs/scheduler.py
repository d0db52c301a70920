"""The scheduler: keeps up to `max_workers` users running on the engine, writes each outcome as it arrives, and
builds the invocation's summary.

Each attempt is bracketed in the user's call ledger: a "start" line (with the run's fingerprint) before the task is
submitted, the worker's line per call, and an "end" line with the attempt's usage when its outcome arrives. An
attempt that never reports (the run was stopped or killed) keeps its call lines, which the next plan charges."""

import logging
import time
from collections import deque
from typing import Any

from fermi_dspy.progress import listening as progress_events
from fermi_dspy.runs.budget import CostLedger
from fermi_dspy.runs.engines import make_engine
from fermi_dspy.runs.estimate import RunEstimate
from fermi_dspy.runs.guard import clear_stop
from fermi_dspy.runs.jobs import UserJob
from fermi_dspy.runs.layout import RunDir
from fermi_dspy.runs.ledger import append_line, end_cut_line
from fermi_dspy.runs.lms import LMConfig
from fermi_dspy.runs.planning import PlannedUser, result_usage, usage_totals
from fermi_dspy.runs.progress import RunProgress
from fermi_dspy.runs.settings import RunSettings
from fermi_dspy.runs.summary import BUDGET, COMPLETED, INTERRUPTED, RunSummary, UserFailure
from fermi_dspy.runs.worker import BUDGET_LIMITED, FAILED, UNPARSEABLE, TaskOutcome, UserTask

logger = logging.getLogger(__name__)

_LISTED = 100


class Scheduler:
    """Keeps up to `max_workers` users running on the engine and records each outcome."""

    def __init__(self, run_dir: RunDir, job: UserJob, planned: list[PlannedUser], settings: RunSettings,
                 task: LMConfig, proposer: LMConfig, estimate: RunEstimate, already: int, *,
                 identity: dict[str, Any] | None = None, fingerprint: str | None = None) -> None:
        self.run_dir, self.job, self.settings = run_dir, job, settings
        self.identity, self.fingerprint = identity or {}, fingerprint
        self.task, self.proposer = task, proposer
        self.ledger = CostLedger(settings.max_cost_per_run, spent=usage_totals(planned).cost or 0.0)
        per_user_usd = estimate.usd_max / max(1, estimate.users) if estimate.usd_max is not None else None
        self.cost_wanted = settings.max_cost_per_user if settings.max_cost_per_user is not None else per_user_usd
        self.cost_per_call = estimate.usd / max(1, estimate.work.calls_max) if estimate.usd is not None else 0.0
        self.progress = RunProgress(len(planned), already, settings.display_progress)
        self.not_started: list[str] = []
        self.users_run = 0
        self.calls = 0
        self.attempts_here: dict[str, int] = {}
        #: user id -> the attempt submitted and not reported yet (interrupted if it is still here at the end).
        self.open_attempts: dict[str, int] = {}

    def _task_for(self, item: PlannedUser) -> tuple[UserTask | None, str, float | None]:
        calls = None if item.allotment is None else item.allotment - item.calls_spent_before
        if calls is not None and calls < item.min_calls:
            if item.calls_spent_before:
                why = f"failed attempts spent {item.calls_spent_before} of its {item.allotment} LM calls"
            elif self.settings.max_calls_per_user is not None and item.allotment == self.settings.max_calls_per_user:
                why = f"max_calls_per_user={item.allotment} is below the {item.min_calls} calls it needs at least"
            else:
                why = f"the run's LM-call budget leaves it {calls} calls, below the {item.min_calls} it needs"
            return None, why, None
        cost_cap = None
        if self.settings.max_cost_per_user is not None:
            cost_cap = self.settings.max_cost_per_user - (item.spent_before().cost or 0.0)
        if self.settings.max_cost_per_run is not None:
            wanted = cost_cap if cost_cap is not None else self.cost_wanted
            may_start, cost_cap = self.ledger.reserve(wanted)
            if not may_start:
                return None, "the run's USD budget is spent", None
            needed = self.cost_per_call * item.min_calls
            if wanted is not None and cost_cap is not None and cost_cap < min(wanted, needed):
                self.ledger.settle(cost_cap, 0.0)
                return None, f"the run's USD budget leaves it ${cost_cap:.6f}, below the ~${needed:.6f} it needs", None
        if cost_cap is not None and cost_cap <= 0:
            return None, "its USD allotment is spent by earlier failed attempts", None
        attempt = item.attempts_before + 1  # the ledger and item.failure are updated after each attempt
        ledger = self.run_dir.ledger_path(item.user.user_id).resolve()
        uid = item.user.user_id
        task = UserTask(item.user, self.job, self.task, self.proposer, self.settings.seed, self.settings.num_threads,
                        calls, cost_cap, attempt, str(ledger), (item.previous or {}).get("result"),
                        self._previous_files(item), item.changed_input,
                        self.run_dir.read_checkpoint(uid, item.user.fingerprint(), self.fingerprint),
                        str(self.run_dir.checkpoint_path(uid).resolve()), self.fingerprint)
        return task, "", cost_cap

    def _previous_files(self, item: PlannedUser) -> dict[str, str]:
        """The files of the user's earlier finished attempt that the job reads when it runs the user again."""
        if item.previous is None:
            return {}
        folder = self.run_dir.user_path(item.user.user_id)
        return {name: (folder / name).read_text(encoding="utf-8") for name in self.job.previous_files
                if (folder / name).is_file()}

    def _start(self, task: UserTask) -> None:
        """Open the attempt in the user's ledger (before the worker charges its first call there)."""
        path = self.run_dir.ledger_path(task.user.user_id)
        end_cut_line(path)
        append_line(path, {"attempt": task.attempt, "event": "start", "run_fingerprint": self.fingerprint,
                           "max_calls": task.max_calls, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self.open_attempts[task.user.user_id] = task.attempt

    def _end(self, item: PlannedUser, task: UserTask, outcome: TaskOutcome) -> None:
        """Close the attempt in the ledger with its usage, and re-read what the user has spent."""
        uid = item.user.user_id
        self.open_attempts.pop(uid, None)
        append_line(self.run_dir.ledger_path(uid), {
            "attempt": task.attempt, "event": "end", "status": outcome.status,
            "usage": outcome.usage.to_dict(),
            "written_by": "worker" if outcome.ledger_written else "driver"})
        item.ledger = self.run_dir.read_ledger(uid)

    def run(self, todo: list[PlannedUser]) -> str:
        """Run `todo` on the settings' engine, writing each outcome; return the status (BUDGET if a user got none)."""
        if not todo:
            self.progress.close()
            return COMPLETED
        s = self.settings
        engine = make_engine(s.engine, max_workers=s.max_workers, ray_address=s.ray_address,
                             ray_cpus_per_user=s.ray_cpus_per_user)
        queue = deque(todo)
        inflight: dict[Any, tuple[PlannedUser, UserTask, float | None]] = {}
        try:
            with progress_events(self.progress.phase):  # reaches the worker threads (their context is copied)
                while queue or inflight:
                    while queue and len(inflight) < engine.max_workers:
                        item = queue.popleft()
                        task, why, reserved = self._task_for(item)
                        if task is None:
                            self.not_started.append(item.user.user_id)
                            self.run_dir.event("user_not_started", user_id=item.user.user_id, reason=why)
                            self.progress.not_started(item.user.user_id, why)
                            continue
                        self.run_dir.event("user_started", user_id=item.user.user_id, attempt=task.attempt,
                                           max_calls=task.max_calls, max_cost=task.max_cost, engine=engine.name,
                                           **({"update": "its input changed"} if item.changed_input else {}))
                        self._start(task)
                        inflight[engine.submit(task)] = (item, task, reserved)
                    if not inflight:
                        break
                    for handle in engine.wait(list(inflight)):
                        item, task, reserved = inflight.pop(handle)
                        outcome = engine.outcome(handle, task)
                        self.ledger.settle(reserved, outcome.usage.cost)
                        if self._record(item, task, outcome):
                            queue.append(item)
        except BaseException:
            engine.cancel(list(inflight))
            raise
        finally:
            self.progress.close()
            engine.close()
            clear_stop()
        return BUDGET if self.not_started else COMPLETED

    def _record(self, item: PlannedUser, task: UserTask, outcome: TaskOutcome) -> bool:
        """Write the outcome into the run directory; True if the user should be retried in this invocation."""
        uid = item.user.user_id
        self.calls += outcome.usage.calls
        earlier = item.spent_before()  # the attempts before this one
        self._end(item, task, outcome)
        if outcome.status == FAILED:
            self.attempts_here[uid] = self.attempts_here.get(uid, 0) + 1
            previous = item.failure or {}
            item.failure = None
            spent = item.spent_before()  # this attempt included (the ledger was re-read)
            item.failure = {
                "user_id": uid,
                "reason": outcome.error,
                "error_type": outcome.error_type,
                "attempts": task.attempt,
                "calls_spent": max(spent.calls, earlier.calls + outcome.usage.calls),
                "failed_calls": max(spent.failed_calls, int(previous.get("failed_calls", 0)) +
                                    outcome.usage.failed_calls),
                "prompt_tokens": spent.prompt_tokens,
                "completion_tokens": spent.completion_tokens,
                "cost_spent": spent.cost,
                "run_fingerprint": self.fingerprint,
                "last_attempt": {"usage": outcome.usage.to_dict(), "replies": outcome.replies,
                                 "seconds": outcome.seconds, "worker": outcome.worker,
                                 "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            }
            self.run_dir.record_failure(uid, item.failure)
            self.run_dir.event("user_failed", user_id=uid, attempt=task.attempt, reason=outcome.error,
                               error_type=outcome.error_type, calls=outcome.usage.calls)
            retry = self.attempts_here[uid] <= self.settings.user_retries
            self.progress.finished(outcome, final=not retry)
            return retry
        record = {
            "user_id": uid,
            "status": outcome.status,
            "job": self.job.name,
            "result": outcome.result,
            "usage": outcome.usage.to_dict(),
            "replies": outcome.replies,
            "budget": {"allotment": item.allotment, "max_cost": task.max_cost,
                       "calls_in_failed_attempts": earlier.calls, "earlier_attempts": earlier.to_dict()},
            "attempts": task.attempt,
            "input_sha256": item.user.fingerprint(),
            "run_fingerprint": self.fingerprint,
            "run_identity": self.identity,
            **({"updated_from": _earlier_version(item.previous)} if item.changed_input and item.previous else {}),
            "timing": {"seconds": outcome.seconds, "worker": outcome.worker,
                       "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        }
        self.run_dir.commit_user(uid, record, outcome.files)
        item.result, item.failure = record, None
        self.users_run += 1
        self.run_dir.event("user_done", user_id=uid, status=outcome.status, calls=outcome.usage.calls,
                           seconds=round(outcome.seconds, 3))
        if outcome.status == UNPARSEABLE:
            logger.warning("User %s: none of its %d task-LM replies could be parsed, so its scores mean nothing "
                           "(marked 'unparseable'; check the model and its chat template).", uid,
                           outcome.replies.get("task", {}).get("unparseable", 0))
        self.progress.finished(outcome)
        return False

    def interrupted_calls(self) -> int:
        """LM calls of the attempts submitted in this invocation that never reported (read from their ledgers)."""
        # An open attempt is its user's last one: nothing after it was started.
        return sum(self.run_dir.read_ledger(uid).usage(since=attempt).calls
                   for uid, attempt in self.open_attempts.items())


def _earlier_version(previous: dict[str, Any]) -> dict[str, Any]:
    """What a user's result computed on its earlier input recorded: that input's hash, its attempts and everything
    they (and versions before it) spent, so the run's usage keeps counting it."""
    return {"input_sha256": previous.get("input_sha256"), "attempts": previous.get("attempts"),
            "finished_at": (previous.get("timing") or {}).get("finished_at"),
            "usage": result_usage(previous).to_dict(),
            "updates": int((previous.get("updated_from") or {}).get("updates", 0)) + 1}


def summarize_run(run: RunDir, planned: list[PlannedUser], scheduler: Scheduler, status: str, estimate: RunEstimate,
               notes: list[str], started: float, schedule_started: float, *, skipped: int,
               bad_records: int) -> RunSummary:
    unreported = 0
    for item in planned:  # committed by its worker (result.json is the commit point) but stopped before reporting
        if item.result is None and item.user.user_id in scheduler.open_attempts:
            item.result = run.read_result(item.user.user_id)
            unreported += item.result is not None
    done = [p for p in planned if p.result is not None]
    unparseable = [p.user.user_id for p in done if p.result.get("status") == UNPARSEABLE]
    failed = [p for p in planned if p.result is None and p.failure is not None]
    not_started = set(scheduler.not_started)
    pending = [p for p in planned if p.result is None and p.failure is None and p.user.user_id not in not_started]
    if status == COMPLETED and pending:
        status = INTERRUPTED
    interrupted = scheduler.interrupted_calls()
    seconds = time.perf_counter() - started
    scheduling = time.perf_counter() - schedule_started
    failures = tuple(UserFailure(p.user.user_id, str(p.failure.get("reason")), str(p.failure.get("error_type")),
                                 int(p.failure.get("attempts", 0)), int(p.failure.get("calls_spent", 0)))
                     for p in failed)
    return RunSummary(
        run_dir=run.path,
        status=status,
        users=len(planned),
        done=len(done),
        budget_limited=sum(1 for p in done if p.result.get("status") == BUDGET_LIMITED),
        failed=len(failed),
        not_started=len(not_started),
        pending=len(pending),
        skipped=skipped,
        already_done=len(done) - scheduler.users_run - unreported,
        bad_records=bad_records,
        usage=usage_totals(planned, run).to_dict(),
        this_invocation={
            "users_run": scheduler.users_run,
            "lm_calls": scheduler.calls + interrupted,
            "interrupted_attempts": len(scheduler.open_attempts),
            "seconds": seconds,
            "scheduling_seconds": scheduling,
            "users_per_minute": scheduler.users_run / scheduling * 60 if scheduling > 0 else 0.0,
        },
        failures=failures,
        not_started_users=tuple(sorted(not_started))[:_LISTED],
        estimate=estimate,
        notes=tuple(notes),
        unparseable=len(unparseable),
        unparseable_users=tuple(unparseable[:_LISTED]),
    )
