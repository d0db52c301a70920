"""`run_user_jobs`: run a `UserJob` for many users into a run directory, resumably, within budgets, on any engine.

The driver (this process) screens the users for bad records, writes or checks the manifest, splits the budgets,
and then keeps up to `max_workers` users running on the engine. As each user ends, the driver writes its files and
result.json atomically (or its failure.json), appends an event and updates the progress bar. A re-run of the same
call skips finished users; a user that was running when the process died has no result.json and starts over, with
what its interrupted attempts spent charged to its allotment (its call ledger, `fermi_dspy.runs.ledger`).
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from fermi_dspy.data import BadRecord, DataError
from fermi_dspy.data.problems import format_problems
from fermi_dspy.runs.engines import import_ray
from fermi_dspy.runs.errors import RunError
from fermi_dspy.runs.estimate import RunEstimate
from fermi_dspy.runs.jobs import UserData, UserJob
from fermi_dspy.runs.layout import (
    FAILURE,
    FAILURES,
    INPUT_PROBLEMS,
    MANIFEST,
    RESULT,
    SUMMARY,
    RunDir,
    read_json,
    result_problem,
)
from fermi_dspy.runs.ledger import LEDGER, read_ledger
from fermi_dspy.runs.lms import LMConfig
from fermi_dspy.runs.manifest import build_manifest, check_orphaned_records, check_resume, fingerprint
from fermi_dspy.runs.planning import PlannedUser, estimate_pending, plan_users
from fermi_dspy.runs.redact import install_log_redaction, register_environment_secrets
from fermi_dspy.runs.scheduler import Scheduler, summarize_run
from fermi_dspy.runs.screening import bad_records_error, no_users_error, problem_dict, screen_users
from fermi_dspy.runs.settings import DataSource, RunSettings
from fermi_dspy.runs.summary import INTERRUPTED, RunSummary

logger = logging.getLogger(__name__)


def _identity(job: UserJob, task: LMConfig, proposer: LMConfig, source: DataSource,
              settings: RunSettings) -> tuple[dict[str, Any], frozenset[str]]:
    """What makes two invocations the same run (see `fermi_dspy.runs.manifest`), and the fingerprints it had in
    earlier versions of fermi-dspy.

    For a job that updates users whose input changed, the data file's hash is left out: each user's own input hash
    decides what is run again. Runs started by earlier versions had it in, so the fingerprint with it (of the data
    file as it is now) is accepted too.
    """
    data = source.identity()
    identity = {"job": job.describe(), "lms": {"task": task.describe(), "proposer": proposer.describe()},
                "data": data, **settings.identity()}
    if not job.updates_changed_users:
        return identity, frozenset()
    earlier = fingerprint(identity)
    del data["sha256"]
    return identity, frozenset({earlier})


def _orphaned_records(run_dir: RunDir) -> dict[str, dict[str, Any]]:
    """Per user folder with records: whether it finished, the settings fingerprints its records name, and the
    identity its result.json records (for naming differences)."""
    out = {}
    for name in run_dir.user_records():  # a record that is absent reads as None (or an empty ledger)
        folder = run_dir.users_path / name
        result, failure = read_json(folder / RESULT), read_json(folder / FAILURE)
        prints = read_ledger(folder / LEDGER).fingerprints
        for record in (result, failure):
            if isinstance(record, dict) and isinstance(record.get("run_fingerprint"), str):
                prints.add(record["run_fingerprint"])
        result = result if isinstance(result, dict) else {}
        identity = result.get("run_identity") if isinstance(result.get("run_identity"), dict) else None
        finished = bool(result) and result_problem(result, str(result.get("user_id"))) is None
        out[name] = {"finished": finished, "fingerprints": prints, "identity": identity}
    return out


def _check_run(run_dir: RunDir, identity: dict[str, Any], settings: RunSettings,
               also_accepted: frozenset[str] = frozenset()) -> tuple[dict[str, Any] | None, list[str]]:
    """Check that `identity` may run in `run_dir`, writing nothing: (the manifest there or None, notes).

    Raises:
        ManifestMismatchError: Other settings, or user records under a missing or unreadable manifest.
        RunError: `settings.resume` is False and the directory holds a run.
    """
    existing, problem = run_dir.inspect_manifest()
    if existing is None:
        records = _orphaned_records(run_dir)
        if not records:
            return None, []
        if not settings.resume:
            raise RunError(f"{run_dir.path} already holds user records; resume it (resume=True, the default) or "
                           "choose a new run directory.")
        note = check_orphaned_records(run_dir.path, problem or "is missing", records, identity,
                                      rebuild=settings.rebuild_manifest, also_accepted=also_accepted)
        return None, [note]
    if not settings.resume:
        raise RunError(f"{run_dir.path} already holds a run; resume it (resume=True, the default) or choose a new "
                       "run directory.")
    return existing, check_resume(existing, identity, run_dir.path, also_accepted=also_accepted)


def _open_run(run_dir: RunDir, identity: dict[str, Any], source: DataSource, settings: RunSettings,
              task: LMConfig, proposer: LMConfig, also_accepted: frozenset[str] = frozenset()) -> list[str]:
    """Write the manifest of a new (or rebuilt) run, or check that `identity` is the run already there; return notes.

    When the data file changed under a job that updates changed users, the manifest's data source becomes the new
    file, and its `data_changes` keep the hashes it had before.
    """
    existing, notes = _check_run(run_dir, identity, settings, also_accepted)
    if existing is None:
        run_dir.write_json(MANIFEST, build_manifest(identity, data_source=source.describe(), execution={
            **settings.execution(), "lms": {"task": task.execution(), "proposer": proposer.execution()}}))
        return notes
    old_source = existing.get("data_source") or {}
    if existing.get("fingerprint") != fingerprint(identity) or old_source.get("sha256") != source.sha256:
        change = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sha256_before": old_source.get("sha256"),
                  "sha256": source.sha256, "path": source.path}
        updated = {**existing, "fingerprint": fingerprint(identity), "identity": identity,
                   "data_source": source.describe(),
                   "data_changes": [*existing.get("data_changes", []), change]}
        run_dir.write_json(MANIFEST, updated)
        run_dir.event("data_changed", **change)
        if old_source.get("sha256") != source.sha256:
            notes.append(f"the data file changed since the last invocation (sha256 {str(change['sha256_before'])[:12]}"
                         f" -> {str(source.sha256)[:12]}): users whose answers changed are updated")
    return notes


def refuse_bad_records(run_dir: str | Path | None, problems: list[BadRecord],
                       excluded: Sequence[BadRecord] = ()) -> DataError:
    """Write every bad record to <run_dir>/input_problems.json (if a run directory is given) and return the error
    that refuses the run, showing the first ones and naming the file."""
    if run_dir is None:
        return bad_records_error(problems)
    run = RunDir(run_dir)
    with run.locked():
        run.write_json(INPUT_PROBLEMS, {"policy": "raise", "refused": True,
                                        "bad_records": [problem_dict(p) for p in problems],
                                        "excluded": [problem_dict(p) for p in excluded]})
    return bad_records_error(problems, run.path / INPUT_PROBLEMS)


def _screen(users: Sequence[UserData], job: UserJob, source: DataSource, settings: RunSettings,
            run_dir: str | Path | None) -> tuple[list[UserData], list[BadRecord], list[BadRecord]]:
    """The users to run, the bad records found by the job's screening and all bad records; applies the policy."""
    kept, problems = screen_users(users, job)
    all_problems = [*source.problems, *problems]
    if all_problems and settings.on_bad_record == "raise":
        raise refuse_bad_records(run_dir, all_problems, list(source.excluded))
    if not kept:
        raise no_users_error(source.path, all_problems, source.excluded, len(users))
    return kept, problems, all_problems


def _to_run(planned: list[PlannedUser], settings: RunSettings) -> list[PlannedUser]:
    return [p for p in planned if p.result is None and (p.failure is None or settings.retry_failed)]


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
    kept, problems, all_problems = _screen(users, job, source, settings, run_dir)
    if settings.engine == "ray":
        import_ray()  # fail before anything is written
    if all_problems:
        logger.warning("Skipped %d bad record(s) (on_bad_record='skip'; all listed in %s):\n%s", len(all_problems),
                       Path(run_dir) / INPUT_PROBLEMS, format_problems(all_problems))
    run = RunDir(run_dir)
    identity, earlier = _identity(job, task, proposer, source, settings)
    run_fingerprint = fingerprint(identity)
    undo_redaction = install_log_redaction()
    try:
        with run.locked():
            notes = _open_run(run, identity, source, settings, task, proposer, earlier)
            for note in notes:
                logger.warning("Resuming %s: %s", run.path, note)
            run.end_cut_event()
            run.write_json(INPUT_PROBLEMS, {"policy": settings.on_bad_record,
                                            "bad_records": [problem_dict(p) for p in all_problems],
                                            "excluded": [problem_dict(p) for p in source.excluded]})
            planned = plan_users(run, kept, job, settings, identity=identity, fingerprint=run_fingerprint,
                                 also_accepted=earlier)
            updating = [p.user.user_id for p in planned if p.changed_input]
            if updating:
                logger.info("Run %s: %d user(s) whose input changed are updated from their earlier results: %s",
                            run.path, len(updating), ", ".join(updating[:10]) + (" ..." if len(updating) > 10 else ""))
            already = sum(1 for p in planned if p.result is not None)
            todo = _to_run(planned, settings)
            estimate = estimate_pending(todo, job, settings, task, proposer)
            if todo:
                logger.info("Run %s: %d users, %d already done; estimate for the rest:\n%s", run.path,
                            len(planned), already, estimate.format())
            run.event("run_started", users=len(planned), already_done=already, to_run=len(todo), updating=updating,
                      execution=settings.execution(), lms={"task": task.execution(), "proposer": proposer.execution()},
                      estimate=estimate.to_dict())
            scheduler = Scheduler(run, job, planned, settings, task, proposer, estimate, already, identity=identity,
                                  fingerprint=run_fingerprint)
            schedule_started, status = time.perf_counter(), INTERRUPTED
            try:
                status = scheduler.run(todo)
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
    kept, _, all_problems = _screen(users, job, source, settings, None)
    identity, earlier = _identity(job, task, proposer, source, settings)
    run = RunDir(run_dir) if run_dir is not None else None
    if run is not None and run.path.is_dir():
        existing, _ = _check_run(run, identity, replace(settings, resume=True), earlier)
        if existing is None and not run.user_records():
            run = None
    else:
        run = None
    planned = plan_users(run, kept, job, settings, identity=identity, fingerprint=fingerprint(identity),
                         also_accepted=earlier)
    estimate = estimate_pending(_to_run(planned, settings), job, settings, task, proposer)
    return replace(estimate, bad_records=tuple(all_problems), excluded=tuple(source.excluded))
