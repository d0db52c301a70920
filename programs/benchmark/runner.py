"""Run every chosen method on every chosen user (same splits), saving each (user, method) result when it is done."""

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import dspy
from tqdm import tqdm

from programs.benchmark.methods import JOBS, CannotRunError, MethodResult, UserTask, jobs_for
from programs.benchmark.methods.base import not_run
from programs.benchmark.report import BenchmarkReport, build_report, write_report
from programs.benchmark.settings import BenchmarkSettings
from programs.benchmark.store import ResultStore, write_json_atomic
from programs.benchmark.users import benchmark_users
from programs.opinion_qa import OpinionQA

logger = logging.getLogger(__name__)


def build_lms(settings: BenchmarkSettings, api_key: str | None = None) -> tuple[dspy.BaseLM, dspy.BaseLM]:
    """The task and proposer LMs from the settings' specs, uncached so every method pays for every call."""
    from fermi_dspy.lm import build_lm

    common = {"local_model": settings.local_model, "route": settings.route, "api_base": settings.api_base,
              "api_key": api_key, "cache": False}
    task_lm = build_lm(settings.task_lm, role="task", max_tokens=settings.task_max_tokens, **common)
    proposer_lm = build_lm(settings.proposer_lm, role="proposer", max_tokens=settings.proposer_max_tokens, **common)
    return task_lm, proposer_lm


def run_job(job: str, task: UserTask, methods: list[str]) -> dict[str, MethodResult]:
    """Run one job on one user; a method that cannot run or fails is recorded as such, never dropped."""
    try:
        results = JOBS[job](task)
    except CannotRunError as exc:
        logger.warning("User %s: %s cannot run: %s", task.split.user_id, job, exc)
        return {m: not_run(task, m, "cannot_run", str(exc)) for m in methods}
    except Exception as exc:  # a method's crash must not end the benchmark; its message may quote user data
        logger.exception("User %s: %s failed", task.split.user_id, job)
        return {m: not_run(task, m, "failed", f"{type(exc).__name__} (see the run's log)") for m in methods}
    return {m: results[m] for m in methods}


def run_benchmark(
    settings: BenchmarkSettings,
    out_dir: str | Path,
    *,
    task_lm: dspy.BaseLM | None = None,
    proposer_lm: dspy.BaseLM | None = None,
    api_key: str | None = None,
    command: str | None = None,
    student: Callable[[], dspy.Module] = OpinionQA,
    display_progress: bool = True,
) -> BenchmarkReport:
    """Run the benchmark into `out_dir` (resuming: finished (user, method) pairs are skipped) and write its report.

    Args:
        settings: What to run.
        out_dir: The run directory.
        task_lm: A ready task LM instead of `settings.task_lm` (tests pass scripted LMs).
        proposer_lm: A ready proposer LM instead of `settings.proposer_lm`.
        api_key: API key for remote LMs; never written anywhere.
        command: The command line that started the run, for the report.
        student: Builds the student program.
        display_progress: Show a progress bar.

    Returns:
        The report (also written as report.md, report.json, summary.csv, results.csv and plot.png).
    """
    started = time.perf_counter()
    store = ResultStore(out_dir)
    store.adopt(settings)
    users = benchmark_users(settings)
    write_json_atomic(store.root / "splits.json", users.manifest())
    jobs = jobs_for(settings.ordered_methods)
    work = [(split, job, methods) for split in users.splits for job, methods in jobs.items()
            if not all(store.finished(split.user_id, m) for m in methods)]
    logger.info("%d user(s) x %d job(s): %d to run, the rest already done.", len(users.splits), len(jobs), len(work))
    if work and (task_lm is None or proposer_lm is None):
        built_task, built_proposer = build_lms(settings, api_key)
        task_lm, proposer_lm = task_lm or built_task, proposer_lm or built_proposer

    bar = tqdm(work, desc="benchmark", unit="job", disable=not display_progress, dynamic_ncols=True)
    for split, job, methods in bar:
        bar.set_postfix(user=split.user_id, job=job)
        task = UserTask(split, settings, task_lm, proposer_lm, student)
        for method, result in run_job(job, task, methods).items():
            store.save(result)
            logger.info("User %s %-16s %s acc=%s calls=%d (%.0f s)", split.user_id, method, result.status,
                        "-" if result.accuracy is None else f"{result.accuracy:.3f}", result.total_calls,
                        result.seconds)
    bar.close()

    report = build_report(settings, users, store.results([s.user_id for s in users.splits], settings.ordered_methods),
                          task_lm=task_lm, proposer_lm=proposer_lm, command=command,
                          seconds_this_invocation=time.perf_counter() - started)
    write_report(report, store.root)
    return report


def rebuild_report(out_dir: str | Path) -> BenchmarkReport:
    """Re-render a run directory's report from its stored results (no LM is built or called)."""
    root = Path(out_dir)
    settings_path = root / "settings.json"
    if not settings_path.exists():
        raise ValueError(f"{root} is not a benchmark run directory (no settings.json).")
    settings = BenchmarkSettings.from_dict(json.loads(settings_path.read_text()))
    users = benchmark_users(settings)
    store = ResultStore(root)
    previous = root / "report.json"
    command = json.loads(previous.read_text()).get("command") if previous.exists() else None
    report = build_report(settings, users, store.results([s.user_id for s in users.splits], settings.ordered_methods),
                          command=command)
    write_report(report, root)
    return report
