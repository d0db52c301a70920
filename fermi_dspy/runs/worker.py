"""One user's work in a worker (a thread here, or a Ray task elsewhere): build the LMs, run the job, report back.

`run_task` never raises for a user's own failure: the job's exception (or an LM endpoint that stays broken, see
`fermi_dspy.runs.guard`) becomes a failed `TaskOutcome` with its reason, secrets removed. Only a stop of the whole
run (`RunInterruptedError`, Ctrl-C) propagates. Every LM call is charged in the user's call ledger before it is sent
(`fermi_dspy.runs.ledger`), so a stop or a kill never loses what the attempt spent. A user whose task LM gave replies
but none that DSPy's adapters could parse finishes as "unparseable": its scores are not evidence of anything.
"""

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

from fermi_dspy.accounting import LMUsage, UsageMeter
from fermi_dspy.files import to_json, write_atomic
from fermi_dspy.runs.errors import UserAbortError
from fermi_dspy.runs.guard import ReplyParses, guard_lm
from fermi_dspy.runs.jobs import JobContext, UserData, UserJob
from fermi_dspy.runs.ledger import CallLedger
from fermi_dspy.runs.lms import LMConfig, worker_lm
from fermi_dspy.runs.redact import install_log_redaction, redact, register_environment_secrets

logger = logging.getLogger(__name__)

#: A user's statuses; all but FAILED are those of a finished user (it has a result.json).
DONE, BUDGET_LIMITED, FAILED, UNPARSEABLE = "done", "budget_limited", "failed", "unparseable"


@dataclass(frozen=True)
class UserTask:
    """Everything a worker needs for one user (picklable; the LMs are built in the worker).

    Attributes:
        user: The user's data.
        job: The work to do.
        task_lm: How to build the task LM.
        proposer_lm: How to build the proposer LM.
        seed: The run's seed.
        num_threads: Parallel LM calls within the user.
        max_calls: The user's LM-call allotment for this attempt (None: uncapped).
        max_cost: The user's USD allotment for this attempt (None: uncapped).
        attempt: 1 for the first attempt, then 2, 3, ... (across resumes, interrupted attempts included).
        ledger_path: The user's call ledger (users/<dir>/calls.jsonl), or None to count in memory only.
        previous: The user's earlier result, when the job runs a finished user again (`UserJob.redo`, or an update
            of a user whose input changed).
        previous_files: The earlier attempt's files the job asked for (`UserJob.previous_files`).
        changed_input: The user's input changed since `previous` (an update).
        checkpoint: What an earlier unfinished attempt saved for the user's current input (`JobContext.checkpoint`).
        checkpoint_path: Where this attempt saves its checkpoint (users/<dir>/checkpoint.json), or None to keep none.
        run_fingerprint: The run's fingerprint, which tags the checkpoint (a checkpoint of another run is not used).
    """

    user: UserData
    job: UserJob
    task_lm: LMConfig
    proposer_lm: LMConfig
    seed: int
    num_threads: int
    max_calls: int | None
    max_cost: float | None
    attempt: int = 1
    ledger_path: str | None = None
    previous: dict[str, Any] | None = None
    previous_files: dict[str, str] = field(default_factory=dict)
    changed_input: bool = False
    checkpoint: dict[str, Any] = field(default_factory=dict)
    checkpoint_path: str | None = None
    run_fingerprint: str | None = None


@dataclass
class TaskOutcome:
    """What came of one attempt at one user.

    Attributes:
        user_id: The user.
        status: "done", "budget_limited", "unparseable" (finished, but no reply of the task LM could be parsed) or
            "failed".
        result: The job's result (empty when failed).
        files: The job's files (empty when failed).
        usage: LM calls, tokens, cost and cache hits of this attempt.
        error: Why it failed (secrets removed), else None.
        error_type: The exception class name, else None.
        seconds: Wall time of the attempt.
        worker: "host:pid" of the process that ran it.
        replies: Per role, replies parsed and unparseable (see `ReplyParses`).
        ledger_written: The worker wrote the call ledger (False: the driver records the attempt's usage).
    """

    user_id: str
    status: str
    result: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    usage: LMUsage = field(default_factory=LMUsage)
    error: str | None = None
    error_type: str | None = None
    seconds: float = 0.0
    worker: str = ""
    replies: dict[str, dict[str, int]] = field(default_factory=dict)
    ledger_written: bool = False


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def failed_outcome(user_id: str, error: str, error_type: str, *, usage: LMUsage | None = None,
                   seconds: float = 0.0) -> TaskOutcome:
    """A failed outcome (the reason is redacted)."""
    return TaskOutcome(user_id, FAILED, usage=usage or LMUsage(), error=redact(error), error_type=error_type,
                       seconds=seconds, worker=worker_name())


_PROCESS_READY = threading.Lock()
_process_ready = False


def _prepare_process() -> None:
    """Once per worker process: redact secrets from its log output (Ray workers log to their own files)."""
    global _process_ready
    with _PROCESS_READY:
        if not _process_ready:
            register_environment_secrets()
            install_log_redaction()
            _process_ready = True


def _checkpoint_writer(task: UserTask) -> Callable[[dict[str, Any]], None]:
    """`JobContext.save_checkpoint` for this attempt: an atomic, durable write tagged with the user's input hash (none
    where the user's folder is not reachable, e.g. a Ray worker on a machine that does not see the run directory)."""
    if task.checkpoint_path is None or not Path(task.checkpoint_path).parent.is_dir():
        return lambda state: None
    path, input_sha256 = Path(task.checkpoint_path), task.user.fingerprint()

    def save(state: dict[str, Any]) -> None:
        write_atomic(path, redact(to_json({"input_sha256": input_sha256, "run_fingerprint": task.run_fingerprint,
                                           "attempt": task.attempt, "state": state})))

    return save


def run_task(task: UserTask) -> TaskOutcome:
    """Run one user's job and report the outcome (see the module docstring)."""
    _prepare_process()
    ledger = CallLedger.open(task.ledger_path, task.attempt)
    try:
        outcome = _run(task, UsageMeter(ledger), ReplyParses())
    finally:
        if ledger is not None:
            ledger.close()
    outcome.ledger_written = ledger is not None
    return outcome


def _run(task: UserTask, meter: UsageMeter, parses: ReplyParses) -> TaskOutcome:
    started = time.perf_counter()
    user_id = task.user.user_id

    def failed(reason: str, error_type: str) -> TaskOutcome:
        outcome = failed_outcome(user_id, reason, error_type, usage=meter.usage(),
                                 seconds=time.perf_counter() - started)
        outcome.replies = parses.to_dict()
        return outcome

    try:
        task_lm = guard_lm(worker_lm(task.task_lm, "task"), meter, "task")
        proposer_lm = guard_lm(worker_lm(task.proposer_lm, "proposer"), meter, "proposer")
        context = JobContext(task_lm=task_lm, proposer_lm=proposer_lm, max_calls=task.max_calls,
                             max_cost=task.max_cost, seed=task.seed, num_threads=task.num_threads, usage=meter.usage,
                             previous=task.previous,
                             previous_files=task.previous_files, changed_input=task.changed_input,
                             checkpoint=dict(task.checkpoint), save_checkpoint=_checkpoint_writer(task))
        with dspy.context(lm=task_lm, callbacks=[*dspy.settings.callbacks, parses]):
            output = task.job.run(task.user, context)
    except UserAbortError as exc:
        return failed(exc.reason, exc.error_type)
    except Exception as exc:
        logger.debug("User %s failed:\n%s", user_id, redact(traceback.format_exc()))
        return failed(f"{type(exc).__name__}: {exc}", type(exc).__name__)
    usage = meter.usage()
    if task.max_calls is not None and usage.calls > task.max_calls:  # a job bug; never hide it
        return failed(f"the job made {usage.calls} LM calls, over its allotment of {task.max_calls}",
                      "BudgetOverrunError")
    status = BUDGET_LIMITED if output.budget_limited else DONE
    if parses.never_parsed("task"):
        status = UNPARSEABLE
    return TaskOutcome(user_id, status, output.result, output.files, usage, seconds=time.perf_counter() - started,
                       worker=worker_name(), replies=parses.to_dict())
