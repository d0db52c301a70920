"""`personalize_users`: personalize many users with Fermi in one call, into a resumable run directory."""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dspy

from fermi_dspy.runs.estimate import RunEstimate
from fermi_dspy.runs.fermi_job import FermiJob
from fermi_dspy.runs.inputs import UsersInput, prepare_users
from fermi_dspy.runs.jobs import UserData, UserJob
from fermi_dspy.runs.lms import LMConfig
from fermi_dspy.runs.runner import estimate_user_jobs, run_user_jobs
from fermi_dspy.runs.settings import DataSource, RunSettings
from fermi_dspy.runs.summary import RunSummary

Student = dspy.Module | str | Callable[[], dspy.Module] | None


def personalize_users(
    users: UsersInput,
    *,
    run_dir: str | Path,
    data_path: str | Path | None = None,
    limit: int | None = None,
    n_train: int | float | None = 10,
    n_test: int | None = 20,
    student: Student = None,
    fermi: Mapping[str, Any] | None = None,
    job: UserJob | None = None,
    task_lm: str | LMConfig | None = None,
    proposer_lm: str | LMConfig | None = None,
    settings: RunSettings | None = None,
) -> RunSummary:
    """Personalize every user with Fermi into `run_dir`; calling it again with the same arguments resumes.

    Each user is split into train/test (seeded), compiled with Fermi on train within its LM-call allotment, and
    scored on test. As soon as a user finishes, users/<id>/program.json, details.json and result.json are written
    atomically; a user that fails (its LM endpoint still failing after retries, or any error) is recorded with its
    reason in users/<id>/failure.json and the run goes on. Re-running skips finished users (none is paid for twice),
    retries failed ones and restarts the one that was interrupted, so a run killed at any moment and resumed gives
    the same results as an uninterrupted one (same seed, deterministic LM, no cap cut short by the kill). Every LM
    call is charged in users/<id>/calls.jsonl as it is made, so the calls of a stopped or killed attempt count
    against the user's and the run's caps on resume: the caps hold across any sequence of kills.

    Args:
        users: A data set name ("panelists", "hwang", "global"; see `fermi_dspy.data.load_users`), a `LoadedUsers`,
            a list of `UserRecord`s, or a list of `UserData` with ready train/test examples.
        run_dir: The run directory (see `fermi_dspy.runs.layout`).
        data_path: The data file or folder for a data set name (default: ../shared/data or `$FERMI_DSPY_DATA`).
        limit: Only the first `limit` users.
        n_train: Train examples per user, a fraction of the user's examples, or None: every answer not in the test
            set (a user who gives more answers can then be updated, see `FermiJob`).
        n_test: Test examples per user (None: all the rest; 0: no evaluation).
        student: The program to personalize (default `fermi_dspy.programs:OpinionQA`).
        fermi: `Fermi` arguments, e.g. {"num_iterations": 3, "num_candidates": 3, "retrieval_fields": ["question"]}.
        job: A custom per-user job instead of Fermi (then `student` and `fermi` are not used).
        task_lm: Task LM: a spec ("local", "local:<model>", "openai/gpt-4o-mini", "factory:<module>:<function>") or
            an `LMConfig` (with api_base, api_key_env, num_retries, timeout, ...). None: `$FERMI_LM` or "local".
        proposer_lm: Proposer LM, same forms. None: `$FERMI_PROPOSER_LM`, else the task LM.
        settings: Seed (of the splits and Fermi), engine, parallelism, per-user and per-run budgets, the policy for bad
            records, resume and retries (see `RunSettings`; default `RunSettings()`).

    Returns:
        The run's summary (also written to summary.json).

    Raises:
        DataError: Bad records and `on_bad_record="raise"` (nothing is started; every bad record is written to
            `run_dir`/input_problems.json), or no user to run (e.g. an empty data file).
        ManifestMismatchError: `run_dir` holds a run with other settings, data or LMs, results computed under other
            settings, or user records under a missing or unreadable manifest.
        RunLockedError: Another process is running in `run_dir`.
        RayNotInstalledError: `engine="ray"` without Ray installed.

    Example:
        ```python
        from fermi_dspy.runs import RunSettings, personalize_users

        summary = personalize_users("hwang", run_dir="runs/hwang", limit=100, task_lm="openai/gpt-4o-mini",
                                    fermi={"num_iterations": 3},
                                    settings=RunSettings(max_calls_per_run=20_000, max_workers=8))
        print(summary.format())
        ```
    """
    settings = settings or RunSettings()
    prepared, source, job = _prepare(users, data_path, limit, n_train, n_test, student, fermi, job, settings)
    return run_user_jobs(prepared, job, run_dir=run_dir, task_lm=task_lm, proposer_lm=proposer_lm,
                         settings=settings, source=source)


def estimate_users(
    users: UsersInput,
    *,
    run_dir: str | Path | None = None,
    data_path: str | Path | None = None,
    limit: int | None = None,
    n_train: int | float | None = 10,
    n_test: int | None = 20,
    student: Student = None,
    fermi: Mapping[str, Any] | None = None,
    job: UserJob | None = None,
    task_lm: str | LMConfig | None = None,
    proposer_lm: str | LMConfig | None = None,
    settings: RunSettings | None = None,
) -> RunEstimate:
    """The dry run of `personalize_users`: expected LM calls, tokens and USD, with no LM call and nothing written.

    Takes the same arguments as `personalize_users`. If `run_dir` holds this run, its finished users are left out,
    as a resume would skip them. The returned estimate lists every bad record and every null answer left out
    (`RunEstimate.bad_records`, `.excluded`).
    """
    settings = settings or RunSettings()
    prepared, source, job = _prepare(users, data_path, limit, n_train, n_test, student, fermi, job, settings)
    return estimate_user_jobs(prepared, job, run_dir=run_dir, task_lm=task_lm, proposer_lm=proposer_lm,
                              settings=settings, source=source)


def _prepare(users: UsersInput, data_path: str | Path | None, limit: int | None, n_train: int | float | None,
             n_test: int | None, student: Student, fermi: Mapping[str, Any] | None, job: UserJob | None,
             settings: RunSettings) -> tuple[list[UserData], DataSource, UserJob]:
    job = job or FermiJob(student, fermi=fermi, evaluate=bool(n_test))
    prepared, source = prepare_users(users, data_path=data_path, on_bad_record=settings.on_bad_record, limit=limit,
                                     n_train=n_train, n_test=n_test, seed=settings.seed)
    return prepared, source, job
