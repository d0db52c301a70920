"""The main job: personalize a few real users with Fermi and compare with baselines on their held-out answers.

For each user: split the user's answers into few-shot train and held-out test (seeded), compile Fermi on the train
answers, then score Fermi and the task's baselines on the same test answers (`programs.tasks`):

* opinion questions (`--data panelists|hwang|global`): (1) the Fermi-personalized student, (2) the plain student and
  (3) the student with the profile in its prompt; accuracy.
* MovieLens ratings (`--data movielens-rating`, LaMP-3-like, no profile): Fermi optimizing `rating_score`, the plain
  student, the LM-free floor (the user's mean training rating, rounded to a whole star) and retrieved few-shot (the
  user's k most similar rated movies in the prompt); MAE and RMSE in stars (lower is better) and the score. The
  floor's MAE and RMSE from the unrounded mean are reported too.
* MovieLens tags (`--data movielens-tag`, LaMP-2-like, no profile): Fermi, the plain student, the floor (the user's
  most frequent training tag) and retrieved few-shot; accuracy.

With no profile, Fermi starts from the plain task prompt. Default splits: opinion 10 train / 12 test (3 users),
rating 10 / 10 (3 users; all 706 raters qualify), tagging 8 / 8 (4 users: every user with 16 tagged movies).

It runs on the many-user engine (`fermi_dspy.runs`), so its run directory is resumable and crash-safe, and then adds:

    report.json        settings, data source, LMs, per-user scores, LM calls and tokens, wall time
    results.csv        one row per (user, method)
    plot.png           the headline metric (accuracy, or MAE) per user and method, with the mean and its 95% CI
    users/<id>/program.json   the user's personalized program (PersonalizedProgram.load); result.json, details.json

Re-running with the same settings and output directory skips users that are already done. This module is also the
`fermi-dspy run` command (`summary`, `add_arguments`, `main`; declared as an entry point in pyproject.toml).
"""

import argparse
import csv
import dataclasses
import json
import logging
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dspy

from fermi_dspy import PersonalizedProgram
from fermi_dspy.runs import (
    FermiJob,
    JobContext,
    JobOutput,
    LMConfig,
    RunDir,
    RunSettings,
    UserData,
    prepare_users,
    run_user_jobs,
)
from fermi_dspy.runs.cli import add_lm_arguments, lm_configs
from programs.baselines import profile_in_prompt, zero_shot
from programs.fewshot import RetrievedFewShot
from programs.stats import bootstrap_ci
from programs.tasks import (
    LOWER_IS_BETTER,
    METRIC_LABELS,
    OPINION,
    RATING,
    TAGGING,
    TASKS,
    rating_summary,
    task_for,
    unrounded_floor_errors,
)

logger = logging.getLogger(__name__)

METHODS = ("zero_shot", "profile_prompt", "fermi")
"""The opinion task's methods, in report order (`TASK_METHODS` has every task's)."""
METHOD_LABELS = {"zero_shot": "plain student", "profile_prompt": "profile in prompt", "fermi": "Fermi",
                 "floor": "LM-free floor", "fewshot": "retrieved few-shot"}
BASELINES = ("zero_shot", "profile_prompt")

#: Each task's methods in report order: Fermi and its baselines. Without a profile, "profile in prompt" would be the
#: plain student again, so the MovieLens tasks have the LM-free floor and retrieved few-shot (LaMP's baseline).
TASK_METHODS = {
    OPINION: METHODS,
    RATING: ("floor", "zero_shot", "fewshot", "fermi"),
    TAGGING: ("floor", "zero_shot", "fewshot", "fermi"),
}
#: Users per task by default: opinion and rating sized for about 5 minutes; tagging all 4 users that have 8 + 8.
TASK_USERS = {OPINION: 3, RATING: 3, TAGGING: 4}
#: Past examples retrieved few-shot shows per query (Fermi's Retrieval-of-Prompt consults as many: the paper's N~).
FEWSHOT_K = 3

PAPER_SETTINGS = {"num_iterations": 10, "num_candidates": 4, "memory_size": 5, "n_train": 20}


@dataclass(frozen=True)
class MainJobSettings:
    """What the main job runs. The defaults are sized to finish in about 5 minutes cold on 2 cores with the default
    local LM (`fermi-dspy run` on a fresh clone, empty DSPy cache: 268 s and 293 s at 9d551f3, 311 s with the same
    calls an hour earlier); `--paper` runs the paper's settings.

    Attributes:
        dataset: "panelists", "hwang", "global", "movielens-rating" or "movielens-tag" (see `fermi_dspy.data`;
            the task follows from it, `programs.tasks.task_for`). `for_data` gives each task's default sizes.
        data_path: A data file or directory instead of the default `../shared/data`.
        users: How many users (the first ones in the file with enough answers).
        n_train: Few-shot answers per user Fermi learns from (~80% scored, ~20% shown to the proposer).
        n_test: Held-out answers per user every method is scored on.
        seed: Seeds the splits and Fermi.
        num_iterations: Fermi's T.
        num_candidates: Fermi's K.
        memory_size: Fermi's L.
        num_threads: Parallel LM calls within a user (1 suits the local in-process engine, one call at a time).
        max_calls_per_user: Cap on one user's LM calls (Fermi's compile and the three evaluations); None: no cap.
    """

    dataset: str = "panelists"
    data_path: str | None = None
    users: int = 3
    n_train: int = 10
    n_test: int = 12
    seed: int = 0
    num_iterations: int = 2
    num_candidates: int = 2
    memory_size: int = 5
    num_threads: int = 1
    max_calls_per_user: int | None = None

    @classmethod
    def for_data(cls, dataset: str = "panelists", **overrides: Any) -> "MainJobSettings":
        """Settings for a data set with its task's default users and split (`TASK_USERS`, `TaskSpec.split`)."""
        task = task_for(dataset)
        defaults = cls()
        n_train, n_test = task.split or (defaults.n_train, defaults.n_test)
        sizes = {"users": TASK_USERS[task.name], "n_train": n_train, "n_test": n_test}
        return cls(dataset=dataset, **{**sizes, **overrides})

    def fermi(self) -> dict[str, Any]:
        task = task_for(self.dataset)
        settings = {"num_iterations": self.num_iterations, "num_candidates": self.num_candidates,
                    "memory_size": self.memory_size, "retrieval_fields": task.retrieval_fields}
        if task.fermi_metric is not None:
            settings["metric"] = task.fermi_metric
        return settings


class MainJob(FermiJob):
    """`FermiJob` plus the task's baselines, all scored on the same held-out answers of each user.

    Args:
        task: The task's name (`programs.tasks.TASKS`); its student is personalized.
        fermi: `Fermi` arguments (see `FermiJob`).
    """

    name = "main"

    def __init__(self, task: str = OPINION, *, fermi: dict[str, Any] | None = None) -> None:
        super().__init__(TASKS[task].student, fermi=fermi)
        self.task = task
        self.methods = TASK_METHODS[task]
        self.baselines = tuple(m for m in self.methods if m != "fermi")

    def describe(self) -> dict[str, Any]:
        described = {**super().describe(), "name": self.name, "baselines": list(self.baselines)}
        if self.task != OPINION:  # an opinion run's identity stays as it was, so its runs still resume
            described.update(task=self.task, fewshot_k=FEWSHOT_K)
        return described

    def _lm_baselines(self) -> int:
        return sum(1 for name in self.baselines if name != "floor")

    def _test_calls(self, user: UserData) -> int:
        return super()._test_calls(user) * (1 + self._lm_baselines())

    def _baseline(self, name: str, user: UserData) -> Any:
        spec = TASKS[self.task]
        if name == "zero_shot":
            return zero_shot(self.student)
        if name == "profile_prompt":
            return profile_in_prompt(self.student, user.profile)
        if name == "floor":
            return spec.floor(user.train)
        if name == "fewshot":
            return RetrievedFewShot(self.student, user.profile, user.train, k=min(FEWSHOT_K, len(user.train)),
                                    past=spec.past)
        raise ValueError(f"unknown baseline {name!r}")

    def _measures(self, test: list[Any], scores: list[float | None], answers: list[str]) -> dict[str, Any]:
        """The task's metrics on one method's test answers (unscored ones left out)."""
        scored = [s for s in scores if s is not None]
        mean = sum(scored) / len(scored) if scored else None
        if not TASKS[self.task].is_rating:
            return {"accuracy": mean}
        return {"score": mean, **rating_summary(test, answers, [s is not None for s in scores])}

    def run(self, user: UserData, context: JobContext) -> JobOutput:
        test = list(user.test)
        reserve = self._lm_baselines() * len(test) * len(self._base_instructions)
        fermi_context = context if context.max_calls is None else dataclasses.replace(
            context, max_calls=max(0, context.max_calls - reserve))
        output = super().run(user, fermi_context)
        if self.task == OPINION:
            fermi = {"accuracy": output.result["test_accuracy"]}
        else:
            tested = json.loads(output.files["details.json"])["test"]
            fermi = self._measures(test, tested["scores"], tested["answers"])
        methods = {"fermi": {**fermi, "scores": None, "test_calls": output.result["calls"]["test"]}}
        for name in self.baselines:
            before = context.usage().calls
            scores, answers = self._evaluate(self._baseline(name, user), test, context, label=name)
            methods[name] = {**self._measures(test, scores, answers), "scores": scores,
                             "test_calls": context.usage().calls - before}
            if name == "floor" and TASKS[self.task].is_rating:
                methods[name].update(unrounded_floor_errors(user.train, test))
            output.budget_limited |= any(s is None for s in scores)
        output.result["methods"] = methods
        output.result.pop("best_prompt", None)  # it holds the profile; keep results free of it (Pew terms)
        return output


def user_rows(run_dir: RunDir, user_ids: Sequence[str], methods: Sequence[str] = METHODS,
              metrics: Sequence[str] = ("accuracy",)) -> list[dict[str, Any]]:
    """One summary row per finished user: each metric per method, LM calls, tokens and time.

    A rating run's rows also hold the floor's errors from the unrounded mean (`floor_unrounded`) and how many test
    answers held a rating per method (`answered`).
    """
    rows = []
    for user_id in user_ids:
        saved = run_dir.read_result(user_id)
        if saved is None:
            continue
        result = saved["result"]
        scored = result["methods"]
        row: dict[str, Any] = {"user_id": user_id, "status": saved["status"], "n_train": result["n_train"],
                               "n_test": result["n_test"]}
        row.update({metric: {m: scored[m].get(metric) for m in methods} for metric in metrics})
        if "mae" in metrics:
            row["answered"] = {m: scored[m].get("answered") for m in methods}
            if "floor" in scored:
                row["floor_unrounded"] = {k: scored["floor"].get(f"{k}_unrounded") for k in ("mae", "rmse")}
        row.update({
            "test_calls": {m: scored[m]["test_calls"] for m in methods},
            "fermi": {**{key: result[key] for key in ("train_score", "stop_reason", "candidates_scored",
                                                       "prompts_kept")},
                      "proposals_rejected": result.get("proposals_rejected", {}),
                      "proposals_salvaged": result.get("proposals_salvaged", 0),
                      "test_routed_past_best": result.get("test_routed_past_best")},
            "fermi_compile_calls": {"task": result["calls"]["compile_task"],
                                    "proposer": result["calls"]["compile_proposer"]},
            "usage": saved["usage"],
            "seconds": saved["timing"]["seconds"],
        })
        rows.append(row)
    return rows


def _ci_key(metric: str) -> str:
    return "ci95" if metric == "accuracy" else f"ci95_{metric}"  # "ci95" is the opinion report's (unchanged) key


def _mean_ci(values: Sequence[float]) -> tuple[float | None, list[float]]:
    if not values:
        return None, [0.0, 0.0]
    interval = bootstrap_ci(values)
    return interval.mean, [interval.low, interval.high]


def summarize(rows: Sequence[dict[str, Any]], methods: Sequence[str] = METHODS,
              metrics: Sequence[str] = ("accuracy",)) -> dict[str, Any]:
    """Per method, each metric's mean over users with its 95% bootstrap CI, and the users counted (headline metric)."""
    overall = {}
    for method in methods:
        summary: dict[str, Any] = {}
        counts = []
        for metric in metrics:
            values = [r[metric][method] for r in rows if r[metric][method] is not None]
            summary[f"mean_{metric}"], summary[_ci_key(metric)] = _mean_ci(values)
            counts.append(len(values))
        if method == "floor" and "mae" in metrics:
            for key in ("mae", "rmse"):
                values = [r["floor_unrounded"][key] for r in rows if r.get("floor_unrounded", {}).get(key) is not None]
                summary[f"mean_{key}_unrounded"], summary[f"ci95_{key}_unrounded"] = _mean_ci(values)
        summary["users"] = counts[0]
        overall[method] = summary
    return overall


def write_csv(path: Path, rows: Sequence[dict[str, Any]], methods: Sequence[str] = METHODS,
              metrics: Sequence[str] = ("accuracy",)) -> None:
    """results.csv: one row per (user, method); a rating run adds the answered count and the unrounded floor."""
    rating = "mae" in metrics
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        extra_columns = ["answered", "mae_unrounded", "rmse_unrounded"] if rating else []
        writer.writerow(["user_id", "method", *metrics, "n_train", "n_test", "test_calls", "compile_task_calls",
                         "compile_proposer_calls", *extra_columns])
        for row in rows:
            for method in methods:
                compile_calls = row["fermi_compile_calls"] if method == "fermi" else {"task": 0, "proposer": 0}
                values = ["" if row[m][method] is None else f"{row[m][method]:.4f}" for m in metrics]
                extra = []
                if rating:
                    unrounded = row.get("floor_unrounded", {}) if method == "floor" else {}
                    extra = [row["answered"][method]] + [
                        "" if unrounded.get(k) is None else f"{unrounded[k]:.4f}" for k in ("mae", "rmse")]
                writer.writerow([row["user_id"], method, *values, row["n_train"], row["n_test"],
                                 row["test_calls"][method], compile_calls["task"], compile_calls["proposer"], *extra])


_AXES = {
    "accuracy": ("test accuracy (share of the user's answers matched)", (0.0, 1.0), "Per-user accuracy on held-out "
                 "answers"),
    "mae": ("test MAE in stars (lower is better)", (0.0, 4.5), "Per-user mean absolute error on held-out ratings"),
}


def plot(path: Path, rows: Sequence[dict[str, Any]], overall: dict[str, Any], methods: Sequence[str] = METHODS,
         metric: str = "accuracy") -> bool:
    """Grouped bars: `metric` per user and method, plus the mean with its 95% CI. False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed, so no plot.png: pip install 'fermi-dspy[plot]'")
        return False
    ylabel, ylim, title = _AXES[metric]
    groups = [r["user_id"] for r in rows] + ["mean"]
    width = 0.8 / len(methods)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.4 * len(groups) + 2), 4.2))
    for index, method in enumerate(methods):
        mean = overall[method][f"mean_{metric}"] or 0.0
        values = [r[metric][method] or 0.0 for r in rows] + [mean]
        positions = [g + (index - (len(methods) - 1) / 2) * width for g in range(len(groups))]
        low, high = overall[method][_ci_key(metric)]
        errors = [[0] * len(rows) + [max(0.0, mean - low)], [0] * len(rows) + [max(0.0, high - mean)]]
        axes.bar(positions, values, width, label=METHOD_LABELS[method], yerr=errors, capsize=3)
    axes.set_xticks(range(len(groups)), groups, rotation=20)
    axes.set_ylabel(ylabel)
    axes.set_ylim(*ylim)
    axes.set_title(title)
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def format_table(rows: Sequence[dict[str, Any]], overall: dict[str, Any], methods: Sequence[str] = METHODS,
                 metrics: Sequence[str] = ("accuracy",)) -> str:
    """The printed table: per user and method, each metric (one block per metric when there are several)."""

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    blocks = []
    for metric in metrics:
        header = f"{'user':<28}" + "".join(f"{METHOD_LABELS[m]:>20}" for m in methods) + f"{'Fermi compile':>38}"
        lines = [header, "-" * len(header)]
        if len(metrics) > 1:
            better = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
            lines.insert(0, f"{METRIC_LABELS[metric]}, {better}")
        for row in rows:
            calls = row["fermi_compile_calls"]["task"] + row["fermi_compile_calls"]["proposer"]
            rejected = sum(row["fermi"].get("proposals_rejected", {}).values())
            salvaged = row["fermi"].get("proposals_salvaged", 0)
            lines.append(f"{row['user_id']:<28}" + "".join(f"{number(row[metric][m]):>20}" for m in methods)
                         + f"{calls:>10} calls, {rejected:>2} rejected, {salvaged:>2} cut")
        lines.append("-" * len(header))
        cells = []
        for method in methods:
            low, high = overall[method][_ci_key(metric)]
            cells.append(f"{number(overall[method][f'mean_{metric}']):>8} [{low:.2f},{high:.2f}]")
        lines.append(f"{'mean (95% CI)':<28}" + "".join(f"{c:>20}" for c in cells))
        if metric in ("mae", "rmse") and "floor" in overall:
            floor = overall["floor"]
            low, high = floor[f"ci95_{metric}_unrounded"]
            lines.append(f"{'floor, unrounded mean':<28}{number(floor[f'mean_{metric}_unrounded']):>20} "
                         f"[{low:.2f},{high:.2f}]")
        blocks.append("\n".join(lines))
    routed = [(row["fermi"].get("test_routed_past_best"), row["n_test"]) for row in rows]
    if routed and all(past is not None for past, _ in routed):
        blocks[0] += (f"\nRetrieval-of-Prompt answered {sum(p for p, _ in routed)} of {sum(n for _, n in routed)} "
                      "Fermi test questions with a kept prompt other than the best-scoring one.")
    return "\n\n".join(blocks)


def run_main_job(
    settings: MainJobSettings,
    out_dir: Path,
    *,
    task_lm: str | LMConfig | None = None,
    proposer_lm: str | LMConfig | None = None,
    display_progress: bool = True,
) -> dict[str, Any]:
    """Run the main job into `out_dir` (resuming what is there) and return the report.

    Args:
        settings: What to run (its data set decides the task, `programs.tasks.task_for`).
        out_dir: The run directory; users already finished there with the same settings are skipped.
        task_lm: The task LM spec or `LMConfig` (None: `$FERMI_LM`, else the local model).
        proposer_lm: The proposer LM spec or `LMConfig` (None: `$FERMI_PROPOSER_LM`, else as the task LM).
        display_progress: Show the progress bar over users.

    Raises:
        ValueError: No user has enough answers, or `out_dir` holds a run with other settings.
    """
    started = time.perf_counter()
    task = task_for(settings.dataset)
    methods, metrics = TASK_METHODS[task.name], task.metrics
    users, source = prepare_users(settings.dataset, data_path=settings.data_path, on_bad_record="skip",
                                  limit=settings.users, n_train=settings.n_train, n_test=settings.n_test,
                                  seed=settings.seed)
    if not users:
        raise ValueError(f"No user in {source.path or settings.dataset} has {settings.n_train + settings.n_test} "
                         "valid answers; lower --train/--test.")
    job = MainJob(task.name, fermi=settings.fermi())
    run_settings = RunSettings(seed=settings.seed, max_workers=1, num_threads=settings.num_threads,
                               max_calls_per_user=settings.max_calls_per_user, on_bad_record="skip",
                               display_progress=display_progress)
    summary = run_user_jobs(users, job, run_dir=out_dir, task_lm=task_lm, proposer_lm=proposer_lm,
                            settings=run_settings, source=source)
    run_dir = RunDir(out_dir)
    rows = user_rows(run_dir, [u.user_id for u in users], methods, metrics)
    overall = summarize(rows, methods, metrics)
    manifest = run_dir.read_manifest() or {}
    report = {
        "settings": asdict(settings),
        "task": task.name,
        "metrics": list(metrics),
        "data": {"dataset": source.dataset, "path": source.path, "sha256": source.sha256,
                 "problems_skipped": len(source.problems)},
        "lms": manifest.get("identity", {}).get("lms"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "dspy": dspy.__version__},
        "methods": {m: METHOD_LABELS[m] for m in methods},
        "overall": overall,
        "proposals_rejected": dict(sum((Counter(r["fermi"].get("proposals_rejected", {})) for r in rows), Counter())),
        "proposals_salvaged": sum(r["fermi"].get("proposals_salvaged", 0) for r in rows),
        "users": rows,
        "failures": [asdict(f) if dataclasses.is_dataclass(f) else f for f in summary.failures],
        "run_status": summary.status,
        "wall_seconds": time.perf_counter() - started,
    }
    run_dir.write_json("report.json", report)
    write_csv(out_dir / "results.csv", rows, methods, metrics)
    if rows:
        plot(out_dir / "plot.png", rows, overall, methods, metrics[0])
    report["table"] = format_table(rows, overall, methods, metrics)
    return report


def load_personalized(out_dir: Path, user_id: str) -> PersonalizedProgram:
    """Load a user's personalized program from a main-job run directory, around its task's student (the manifest
    names the task; a run without one is an opinion run)."""
    run_dir = RunDir(out_dir)
    job = ((run_dir.read_manifest() or {}).get("identity") or {}).get("job") or {}
    program = PersonalizedProgram(TASKS[job.get("task", OPINION)].student())
    program.load(str(run_dir.user_path(user_id) / "program.json"))
    return program


# -- the `fermi-dspy run` command -----------------------------------------------------------------------------------

summary = "the main job: personalize a few real users and compare with baselines"
description = ("Personalize a few real users with Fermi and score it and the task's baselines on each user's held-out "
               "answers: for opinion data the plain and profile-in-prompt students; for MovieLens (no profile) the "
               "plain student, the LM-free floor and retrieved few-shot.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `fermi-dspy run` to `parser`."""
    defaults = MainJobSettings()
    rating, tagging = MainJobSettings.for_data(RATING), MainJobSettings.for_data(TAGGING)
    parser.add_argument("--data", default=defaults.dataset, help="panelists (default), hwang or global (opinion "
                        "questions, with profiles); movielens-rating or movielens-tag (LaMP-3/LaMP-2-like MovieLens "
                        "tasks, no profile)")
    parser.add_argument("--data-path", default=None, help="a data file or folder instead of ../shared/data")
    parser.add_argument("--users", type=int, default=None, help=f"number of users (default {defaults.users}; "
                        f"movielens-tag {tagging.users}: every user with {tagging.n_train + tagging.n_test} tagged "
                        "movies)")
    parser.add_argument("--train", type=int, default=None, help=f"few-shot answers per user (default "
                        f"{defaults.n_train}, movielens-rating {rating.n_train}, movielens-tag {tagging.n_train}; "
                        f"{PAPER_SETTINGS['n_train']} with --paper)")
    parser.add_argument("--test", type=int, default=None, help=f"held-out answers per user (default "
                        f"{defaults.n_test}, movielens-rating {rating.n_test}, movielens-tag {tagging.n_test})")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--iterations", type=int, default=None, help=f"Fermi's T (default {defaults.num_iterations})")
    parser.add_argument("--candidates", type=int, default=None, help=f"Fermi's K (default {defaults.num_candidates})")
    parser.add_argument("--memory", type=int, default=None, help=f"Fermi's L (default {defaults.memory_size})")
    parser.add_argument("--paper", action="store_true", help="the paper's settings: T=10, K=4, L=5, 20 train answers "
                        "(16 scored), about 640 task-LM calls per user")
    parser.add_argument("--threads", type=int, default=defaults.num_threads, help="parallel LM calls (default "
                        "%(default)s; raise it for hosted APIs)")
    parser.add_argument("--out", default=None, help="run directory (default runs/main-<time>); re-running into it "
                        "resumes")
    add_lm_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> MainJobSettings:
    """The main job's settings from parsed `fermi-dspy run` arguments: what is not given is the task's default."""
    paper = PAPER_SETTINGS if args.paper else {}
    defaults = MainJobSettings.for_data(args.data)

    def pick(value: int | None, key: str) -> int:
        return value if value is not None else paper.get(key, getattr(defaults, key))

    return MainJobSettings(
        dataset=args.data, data_path=args.data_path, users=pick(args.users, "users"),
        n_train=pick(args.train, "n_train"), n_test=pick(args.test, "n_test"), seed=args.seed,
        num_iterations=pick(args.iterations, "num_iterations"), num_candidates=pick(args.candidates, "num_candidates"),
        memory_size=pick(args.memory, "memory_size"), num_threads=args.threads,
    )


def main(args: argparse.Namespace) -> int:
    """Run `fermi-dspy run` with parsed arguments; return the exit status (3 if some user failed)."""
    settings = settings_from_args(args)
    task_lm, proposer_lm = lm_configs(args)
    out = Path(args.out or f"runs/main-{time.strftime('%Y%m%d-%H%M%S')}")
    report = run_main_job(settings, out, task_lm=task_lm, proposer_lm=proposer_lm)
    print(report["table"])
    for failure in report["failures"]:
        print(f"failed: {failure['user_id']}: {failure['reason']}", file=sys.stderr)
    lms = report["lms"] or {}
    print(f"\nRun directory: {out}  (report.json, results.csv, plot.png, users/<id>/program.json)")
    print(f"Wall time: {report['wall_seconds']:.0f} s; task LM {lms.get('task', {}).get('spec')}, proposer LM "
          f"{lms.get('proposer', {}).get('spec')}")
    return 0 if not report["failures"] else 3
