"""`run_user_jobs`: run a `UserJob` for many users into a run directory, resumably, within budgets, on any engine.

The driver (this process) screens the users for bad records, writes or checks the manifest, splits the budgets,
and then keeps up to `max_workers` users running on the engine. As each user ends, the driver writes its files and
result.json atomically (or its failure.json), appends an event and updates the progress bar. A re-run of the same
call skips finished users; a user that was running when the process died has no result.json and simply starts over.
"""

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fermi_dspy.runs.engines import import_ray, make_engine
from fermi_dspy.runs.errors import RunError
from fermi_dspy.runs.estimate import RunEstimate
from fermi_dspy.runs.guard import clear_stop
from fermi_dspy.runs.jobs import UserData, UserJob
from fermi_dspy.runs.layout import FAILURES, INPUT_PROBLEMS, MANIFEST, SUMMARY, RunDir
from fermi_dspy.runs.lms import LMConfig
from fermi_dspy.runs.manifest import build_manifest, check_resume
from fermi_dspy.runs.planning import PlannedUser, estimate_pending, plan_users
from fermi_dspy.runs.redact import install_log_redaction, register_environment_secrets
from fermi_dspy.runs.scheduler import Scheduler, summarize_run
from fermi_dspy.runs.screening import bad_records_error, problem_dict, screen_users
from fermi_dspy.runs.settings import DataSource, RunSettings
from fermi_dspy.runs.summary import COMPLETED, INTERRUPTED, RunSummary

logger = logging.getLogger(__name__)


def _identity(job: UserJob, task: LMConfig, proposer: LMConfig, source: DataSource,
              settings: RunSettings) -> dict[str, Any]:
    """What makes two invocations the same run (see `fermi_dspy.runs.manifest`)."""
    return {"job": job.describe(), "lms": {"task": task.describe(), "proposer": proposer.describe()},
            "data": source.identity(), **settings.identity()}


def _open_run(run_dir: RunDir, identity: dict[str, Any], source: DataSource, settings: RunSettings,
              task: LMConfig, proposer: LMConfig) -> list[str]:
    """Write the manifest of a new run, or check that `identity` is the run already there; return notes."""
    existing = run_dir.read_manifest() if run_dir.exists() else None
    if existing is None:
        run_dir.write_json(MANIFEST, build_manifest(identity, data_source=source.describe(), execution={
            **settings.execution(), "lms": {"task": task.execution(), "proposer": proposer.execution()}}))
        return []
    if not settings.resume:
        raise RunError(f"{run_dir.path} already holds a run; resume it (resume=True, the default) or choose a new "
                       "run directory.")
    return check_resume(existing, identity, run_dir.path)


def _to_run(planned: list[PlannedUser], settings: RunSettings) -> list[PlannedUser]:
    return [p for p in planned if p.result is None and (p.failure is None or settings.retry_failed)]


def _schedule(run: RunDir, scheduler: Scheduler, settings: RunSettings, todo: list[PlannedUser]) -> str:
    """Run the users left on the engine; return the status ("interrupted" if anything escaped)."""
    if not todo:
        scheduler.progress.close()
        return COMPLETED
    engine = make_engine(settings.engine, max_workers=settings.max_workers, ray_address=settings.ray_address,
                         ray_cpus_per_user=settings.ray_cpus_per_user)
    try:
        return scheduler.run(engine)
    finally:
        engine.close()
        clear_stop()


def _finish(run: RunDir, summary: RunSummary) -> None:
    run.write_json(FAILURES, [f.to_dict() for f in summary.failures])
    run.write_json(SUMMARY, summary.to_dict())
    run.event("run_finished", status=summary.status, done=summary.done, failed=summary.failed,
              not_started=summary.not_started, pending=summary.pending, this_invocation=summary.this_invocation)
    logger.info("Run %s %s: %d of %d users done (%d budget-limited), %d failed, %d without budget, %d pending.",
                run.path, summary.status, summary.done, summary.users, summary.budget_limited, summary.failed,
                summary.not_started, summary.pending)


def run_user_jobs(
    users: Sequence[UserData],
    job: UserJob,
    *,
    run_dir: str | Path,
    task_lm: str | LMConfig | None = None,
    proposer_lm: str | LMConfig | None = None,
    settings: RunSettings | None = None,
    source: DataSource | None = None,
) -> RunSummary:
    """Run `job` for every user into `run_dir`; re-running the same call resumes.

    Args:
        users: The users, in the order they are run and budgets are split.
        job: The per-user work (e.g. `FermiJob`).
        run_dir: The run directory (created if needed; see `fermi_dspy.runs.layout` for its files).
        task_lm: The task LM spec or `LMConfig` (None: `$FERMI_LM` or "local").
        proposer_lm: The proposer LM (None: `$FERMI_PROPOSER_LM`, else the task LM).
        settings: Seed, engine, parallelism, budgets and policies.
        source: Where the users came from, with the bad records already found there.

    Returns:
        The run's summary (also in summary.json).

    Raises:
        DataError: Bad records in the input and `on_bad_record="raise"` (nothing is written).
        ManifestMismatchError: `run_dir` holds a run with other settings, data or LMs.
        RunLockedError: Another process is running in `run_dir`.
        RayNotInstalledError: engine="ray" without Ray installed (nothing is written).
    """
    started = time.perf_counter()
    settings = settings or RunSettings()
    source = source or DataSource()
    register_environment_secrets()
    task = LMConfig.coerce(task_lm).resolve("task")
    proposer = LMConfig.coerce(proposer_lm).resolve("proposer", default=task)
    kept, problems = screen_users(users, job)
    all_problems = [*source.problems, *problems]
    if all_problems and settings.on_bad_record == "raise":
        raise bad_records_error(all_problems)
    if settings.engine == "ray":
        import_ray()  # fail before anything is written
    for problem in problems:
        logger.warning("Skipped bad record: %s", problem)
    run = RunDir(run_dir)
    identity = _identity(job, task, proposer, source, settings)
    undo_redaction = install_log_redaction()
    try:
        with run.locked():
            notes = _open_run(run, identity, source, settings, task, proposer)
            for note in notes:
                logger.warning("Resuming %s: %s", run.path, note)
            run.end_cut_event()
            run.write_json(INPUT_PROBLEMS, {"policy": settings.on_bad_record,
                                            "bad_records": [problem_dict(p) for p in all_problems],
                                            "excluded": [problem_dict(p) for p in source.excluded]})
            planned = plan_users(run, kept, job, settings)
            already = sum(1 for p in planned if p.result is not None)
            todo = _to_run(planned, settings)
            workers = settings.max_workers or 1
            estimate = estimate_pending(todo, job, settings, task, proposer, workers)
            if todo:
                logger.info("Run %s: %d users, %d already done; estimate for the rest:\n%s", run.path,
                            len(planned), already, estimate.format())
            run.event("run_started", users=len(planned), already_done=already, to_run=len(todo),
                      execution=settings.execution(), lms={"task": task.execution(), "proposer": proposer.execution()},
                      estimate=estimate.to_dict())
            scheduler = Scheduler(run, job, planned, settings, task, proposer, estimate, already)
            schedule_started, status = time.perf_counter(), INTERRUPTED
            try:
                status = _schedule(run, scheduler, settings, todo)
            finally:
                summary = summarize_run(run, planned, scheduler, status, estimate, notes, started, schedule_started,
                                        skipped=len(problems), bad_records=len(all_problems))
                _finish(run, summary)
            return summary
    finally:
        undo_redaction()


def estimate_user_jobs(
    users: Sequence[UserData],
    job: UserJob,
    *,
    run_dir: str | Path | None = None,
    task_lm: str | LMConfig | None = None,
    proposer_lm: str | LMConfig | None = None,
    settings: RunSettings | None = None,
    source: DataSource | None = None,
) -> RunEstimate:
    """What `run_user_jobs` with the same arguments would cost, without calling any LM or writing anything.

    Users already finished in `run_dir` (if it holds this run) are left out, as a resume would skip them.

    Raises:
        DataError: Bad records in the input and `on_bad_record="raise"`.
        ManifestMismatchError: `run_dir` holds a run with other settings, data or LMs.
    """
    settings = settings or RunSettings()
    source = source or DataSource()
    task = LMConfig.coerce(task_lm).resolve("task", need_key=False)
    proposer = LMConfig.coerce(proposer_lm).resolve("proposer", default=task, need_key=False)
    kept, problems = screen_users(users, job)
    if (problems or source.problems) and settings.on_bad_record == "raise":
        raise bad_records_error([*source.problems, *problems])
    run = RunDir(run_dir) if run_dir is not None else None
    if run is not None and run.exists():
        check_resume(run.read_manifest() or {}, _identity(job, task, proposer, source, settings), run.path)
    else:
        run = None
    planned = plan_users(run, kept, job, settings)
    return estimate_pending(_to_run(planned, settings), job, settings, task, proposer, settings.max_workers or 1)
