"""The benchmark as a `UserJob` of `fermi_dspy.runs`: every chosen method on one user, on the same split.

`run_benchmark` runs it for every user into a run directory, so the benchmark gets what every run gets: resume
after a kill, engines (threads or Ray), LM-call budgets, the per-user call ledger and fail-fast on a broken endpoint.
Each user's methods are written as job output files, one per method: `users/<user>/<method>.json` (a
`MethodResult`), next to the run's own `result.json`. A resume asking for methods a finished user has not run (or
whose run failed) runs just those for that user (`BenchmarkJob.redo`); the other methods' files stay as they are.
`settings.json` and `splits.json` describe the benchmark, and `report.md` etc. are rendered from the files
(`fermi_dspy bench report` renders them again, also for run directories written before benchmarks were runs).
"""

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dspy

from fermi_dspy.files import sha256_file, to_json
from fermi_dspy.runs import (
    DataSource,
    FermiJob,
    JobContext,
    JobOutput,
    RunDir,
    RunSettings,
    UserData,
    UserJob,
    WorkEstimate,
    estimate_user_jobs,
    run_user_jobs,
)
from programs.benchmark.methods import JOBS, CannotRunError, MethodResult, UserTask, jobs_for
from programs.benchmark.methods.base import not_run
from programs.benchmark.provenance import describe_lm, read_invocations, record_invocation, record_invocation_end
from programs.benchmark.report import BenchmarkReport, build_report
from programs.benchmark.settings import BenchmarkSettings
from programs.benchmark.users import BenchmarkUsers, benchmark_users
from programs.tasks import task_for

logger = logging.getLogger(__name__)

FINAL_STATUSES = ("ok", "cannot_run")
"""Method results a resume keeps; "failed" ones are run again."""

#: Settings a stored result depends on besides the LMs (the run's identity holds those, and the seed).
RESULT_AFFECTING = ("dataset", "n_train", "n_test", "num_iterations", "num_candidates", "memory_size", "fewshot_k")
#: Methods that answer the test questions without a compile of their own.
NO_COMPILE = ("floor", "zero_shot", "profile_prompt", "fewshot", "fermi_best")


def run_job(job: str, task: UserTask, methods: list[str]) -> dict[str, MethodResult]:
    """Run one job on one user; a method that cannot run or fails is recorded as such, never dropped.

    An LM endpoint that stays broken ends the whole user instead (`fermi_dspy.runs.UserAbortError`): the run
    records it as failed and runs it again on resume.
    """
    try:
        results = JOBS[job](task)
    except CannotRunError as exc:
        logger.warning("User %s: %s cannot run: %s", task.user.user_id, job, exc)
        return {m: not_run(task, m, "cannot_run", str(exc)) for m in methods}
    except Exception as exc:  # a method's crash must not end the benchmark; its message may quote user data
        logger.exception("User %s: %s failed", task.user.user_id, job)
        return {m: not_run(task, m, "failed", f"{type(exc).__name__} (see the run's log)") for m in methods}
    return {m: results[m] for m in methods}


class BenchmarkJob(UserJob):
    """Every method of `settings` on one user; resumable per (user, method).

    Args:
        settings: What the benchmark compares (methods, T, K, L, split sizes, ...).
        student: Builds the student program; None is the task's (`OpinionQA`, `MovieRating`, `MovieTagging`).
        keep_programs: Also save each method's compiled program as `users/<user>/<method>.program.json`, to read
            the learned prompts. These files hold the profile and answers the prompts quote: never publish them.
    """

    name = "benchmark"

    def __init__(self, settings: BenchmarkSettings, student: Callable[[], dspy.Module] | None = None, *,
                 keep_programs: bool = False) -> None:
        self.settings = settings
        self.student = student or task_for(settings.dataset).student
        self.keep_programs = keep_programs
        self._fermi = FermiJob(self.student, fermi=settings.fermi())

    def describe(self) -> dict[str, Any]:
        student = f"{self.student.__module__}.{self.student.__qualname__}"
        return {"name": self.name, "student": student, **{k: getattr(self.settings, k) for k in RESULT_AFFECTING}}

    def _todo(self, previous: Mapping[str, Any] | None) -> tuple[str, ...]:
        done = {m for m, r in ((previous or {}).get("methods") or {}).items() if r.get("status") in FINAL_STATUSES}
        return tuple(m for m in self.settings.ordered_methods if m not in done)

    def redo(self, result: Mapping[str, Any]) -> bool:
        return bool(self._todo(result))

    def _restored(self, user: UserData,
                  checkpoint: Mapping[str, Any]) -> tuple[dict[str, MethodResult], dict[str, str]]:
        """The methods an unfinished earlier attempt finished (ok or cannot_run), and their saved programs (when this
        run keeps programs). A checkpoint that does not load (e.g. written by other code) is ignored, with a warning."""
        try:
            results = {m: MethodResult.from_dict(data) for m, data in (checkpoint.get("methods") or {}).items()
                       if m in self.settings.ordered_methods and data.get("status") in FINAL_STATUSES}
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            logger.warning("User %s: ignoring the unfinished attempt's checkpoint, which does not load (%s: %s); "
                           "every method runs again.", user.user_id, type(exc).__name__, exc)
            return {}, {}
        if results:
            logger.info("User %s: %d method(s) kept from an unfinished attempt: %s", user.user_id, len(results),
                        ", ".join(results))
        programs = {m: text for m, text in (checkpoint.get("programs") or {}).items()
                    if m in results and self.keep_programs and isinstance(text, str)}
        return results, programs

    def estimate(self, user: UserData, *, seed: int = 0) -> WorkEstimate:
        """Fermi's estimate scaled to the methods (DSPy's optimizers are configured to about Fermi's budget)."""
        fermi, methods = self._fermi.estimate(user, seed=seed), self.settings.ordered_methods
        compiling, testing = sum(m not in NO_COMPILE for m in methods), sum(m != "floor" for m in methods)
        calls = compiling * (fermi.calls_max - len(user.test)) + testing * len(user.test)
        scale = calls / max(1, fermi.calls_max)
        task_calls = round(fermi.task_calls * scale)
        return WorkEstimate(calls_max=calls, task_calls=task_calls, proposer_calls=calls - task_calls,
                            **{k: round(v * scale) for k, v in fermi.to_dict().items() if "tokens" in k})

    def run(self, user: UserData, context: JobContext) -> JobOutput:
        task = UserTask(user, self.settings, context, self.student)
        results, programs = self._restored(user, context.checkpoint)
        todo = tuple(m for m in self._todo(context.previous) if m not in results)
        for job, methods in jobs_for(todo).items():
            for method, result in run_job(job, task, methods).items():
                results[method] = result
                if self.keep_programs and result.program is not None:
                    programs[method] = to_json(result.program.dump_state())
                logger.info("User %s %-16s %s acc=%s calls=%d (%.0f s)", user.user_id, method, result.status,
                            "-" if result.accuracy is None else f"{result.accuracy:.3f}", result.total_calls,
                            result.seconds)
            # A stop or kill from here on loses none of the methods finished so far (after each job, which yields
            # one method or several sharing a compile): the next attempt skips them.
            context.save_checkpoint({"methods": {m: r.to_dict() for m, r in results.items()}, "programs": programs})
        methods = {**(context.previous or {}).get("methods", {}),
                   **{m: {"status": r.status, "accuracy": r.accuracy} for m, r in results.items()}}
        lms = {"task": describe_lm(context.task_lm), "proposer": describe_lm(context.proposer_lm)}
        files = {f"{m}.json": to_json(r.to_dict()) for m, r in results.items()}
        files.update({f"{m}.program.json": text for m, text in programs.items()})
        return JobOutput({"methods": methods, "lms": lms}, files,
                         budget_limited=any(r.reason.startswith("BudgetExhaustedError") for r in results.values()))


def _refuse_old_format(root: Path) -> None:
    if (root / "settings.json").is_file() and not (root / "manifest.json").exists() and any(root.glob("users/*/*")):
        raise ValueError(f"{root} holds a benchmark run written before benchmarks were resumable runs (it has no "
                         f"manifest.json). `fermi-dspy bench report --out {root}` still renders it; run into a new "
                         "--out directory.")


def run_benchmark(
    settings: BenchmarkSettings,
    out_dir: str | Path,
    *,
    command: str | None = None,
    student: Callable[[], dspy.Module] | None = None,
    engine: str = "threads",
    max_workers: int | None = None,
    display_progress: bool = True,
    keep_programs: bool = False,
    **lm_options: Any,
) -> BenchmarkReport:
    """Run the benchmark into `out_dir` (resuming: finished (user, method) pairs are skipped) and write its report.

    Args:
        settings: What to run.
        out_dir: The run directory.
        command: The command line that started the run, for the report.
        student: Builds the student program (None: the task's).
        engine: "threads" or "ray" (see `fermi_dspy.runs.RunSettings`).
        max_workers: Users at once.
        display_progress: Show a progress bar over users.
        keep_programs: Save each method's compiled program beside its result (`BenchmarkJob`); they quote the
            user's profile and answers, so a published run directory must not hold them.
        **lm_options: How the LMs are reached (api_key_env, num_retries, timeout, local_threads).

    Returns:
        The report (also written as report.md, report.json, summary.csv, results.csv and plot.png).

    Raises:
        ValueError: `out_dir` holds a benchmark with other result-affecting settings (or of the old format), or no
            user has enough answers.
    """
    started, root = time.perf_counter(), Path(out_dir)
    _refuse_old_format(root)
    users = benchmark_users(settings)
    job = BenchmarkJob(settings, student, keep_programs=keep_programs)
    task_lm, proposer_lm = settings.lm_configs(**lm_options)
    run = RunSettings(seed=settings.seed, engine=engine, max_workers=max_workers, num_threads=settings.num_threads,
                      on_bad_record="skip", display_progress=display_progress)
    source = DataSource(users.dataset, users.path, sha256_file(users.path), {"n_train": settings.n_train,
                                                                            "n_test": settings.n_test})
    common = {"task_lm": task_lm, "proposer_lm": proposer_lm, "settings": run, "source": source}
    estimate_user_jobs(list(users.users), job, run_dir=root, **common)  # refuses other settings; writes nothing
    run_dir = RunDir(root)
    run_dir.write_json("settings.json", settings.to_dict())
    run_dir.write_json("splits.json", users.manifest)
    record_invocation(root, command)
    summary = run_user_jobs(list(users.users), job, run_dir=root, **common)
    record_invocation_end(root, int(summary.this_invocation.get("users_run", 0)),
                          int(summary.this_invocation.get("lm_calls", 0)))
    for failure in summary.failures:
        logger.warning("User %s failed, its methods are not in the report (re-run to retry): %s", failure.user_id,
                       failure.reason)
    return build_report(root, settings, users, command=command, seconds_this_invocation=time.perf_counter() - started)


def rebuild_report(out_dir: str | Path) -> BenchmarkReport:
    """Re-render a run directory's report from its stored results (no data, LM or run is needed)."""
    root = Path(out_dir)
    if not (root / "settings.json").exists():
        raise ValueError(f"{root} is not a benchmark run directory (no settings.json).")
    previous = json.loads((root / "report.json").read_text()) if (root / "report.json").exists() else {}
    invocations = read_invocations(root)
    command = previous.get("command") or (invocations[0]["command"] if invocations else None)
    return build_report(root, BenchmarkSettings.from_dict(json.loads((root / "settings.json").read_text())),
                        BenchmarkUsers(json.loads((root / "splits.json").read_text())), command=command)
