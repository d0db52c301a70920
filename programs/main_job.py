"""The main job: personalize a few real users with Fermi and compare with two baselines on their held-out answers.

For each user: split the user's answers into few-shot train and held-out test (seeded), compile Fermi on the train
answers, then score on the same test answers (1) the Fermi-personalized student, (2) the plain student and (3) the
student with the profile in its prompt. It runs on the many-user engine (`fermi_dspy.runs`), so its run directory is
resumable and crash-safe, and then adds:

    report.json        settings, data source, LMs, per-user scores, LM calls and tokens, wall time
    results.csv        one row per (user, method)
    plot.png           accuracy per user and method, with the mean and its 95% CI
    users/<id>/program.json   the user's personalized program (PersonalizedProgram.load); result.json, details.json

Re-running with the same settings and output directory skips users that are already done. This module is also the
`fermi-dspy run` command (`summary`, `add_arguments`, `main`; declared as an entry point in pyproject.toml).
"""

import argparse
import csv
import dataclasses
import logging
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dspy

from fermi_dspy import PersonalizedProgram
from fermi_dspy.programs import OpinionQA
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

logger = logging.getLogger(__name__)

METHODS = ("zero_shot", "profile_prompt", "fermi")
METHOD_LABELS = {"zero_shot": "plain student", "profile_prompt": "profile in prompt", "fermi": "Fermi"}
BASELINES = ("zero_shot", "profile_prompt")

PAPER_SETTINGS = {"num_iterations": 10, "num_candidates": 4, "memory_size": 5, "n_train": 20}


@dataclass(frozen=True)
class MainJobSettings:
    """What the main job runs. The defaults are sized to finish in about 5 minutes cold on 2 cores with the default
    local LM (measured with `python -m programs.bench_profile`: 298 s); `--paper` runs the paper's settings.

    Attributes:
        dataset: "panelists", "hwang" or "global" (see `fermi_dspy.data`).
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
    n_test: int = 15
    seed: int = 0
    num_iterations: int = 2
    num_candidates: int = 2
    memory_size: int = 5
    num_threads: int = 1
    max_calls_per_user: int | None = None

    def fermi(self) -> dict[str, Any]:
        return {"num_iterations": self.num_iterations, "num_candidates": self.num_candidates,
                "memory_size": self.memory_size, "retrieval_fields": ["question"]}


class MainJob(FermiJob):
    """`FermiJob` plus the two baselines, all scored on the same held-out answers of each user."""

    name = "main"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "name": self.name, "baselines": list(BASELINES)}

    def _test_calls(self, user: UserData) -> int:
        return super()._test_calls(user) * (1 + len(BASELINES))

    def run(self, user: UserData, context: JobContext) -> JobOutput:
        test = list(user.test)
        reserve = len(BASELINES) * len(test) * len(self._base_instructions)
        fermi_context = context if context.max_calls is None else dataclasses.replace(
            context, max_calls=max(0, context.max_calls - reserve))
        output = super().run(user, fermi_context)
        methods = {"fermi": {"accuracy": output.result["test_accuracy"], "scores": None,
                             "test_calls": output.result["calls"]["test"]}}
        programs = {"zero_shot": zero_shot(self.student), "profile_prompt": profile_in_prompt(self.student,
                                                                                             user.profile)}
        for name, program in programs.items():
            before = context.usage().calls
            scores, _ = self._evaluate(program, test, context, label=name)
            scored = [s for s in scores if s is not None]
            methods[name] = {"accuracy": sum(scored) / len(scored) if scored else None, "scores": scores,
                             "test_calls": context.usage().calls - before}
            output.budget_limited |= len(scored) < len(scores)
        output.result["methods"] = methods
        output.result.pop("best_prompt", None)  # it holds the profile; keep results free of it (Pew terms)
        return output


def bootstrap_ci(values: Sequence[float], *, seed: int = 0, rounds: int = 2000) -> tuple[float, float]:
    """95% bootstrap confidence interval of the mean over users (percentile method)."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (0.0, 0.0)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def user_rows(run_dir: RunDir, user_ids: Sequence[str]) -> list[dict[str, Any]]:
    """One summary row per finished user: accuracy per method, LM calls, tokens and time."""
    rows = []
    for user_id in user_ids:
        saved = run_dir.read_result(user_id)
        if saved is None:
            continue
        result = saved["result"]
        rows.append({
            "user_id": user_id,
            "status": saved["status"],
            "n_train": result["n_train"],
            "n_test": result["n_test"],
            "accuracy": {m: result["methods"][m]["accuracy"] for m in METHODS},
            "test_calls": {m: result["methods"][m]["test_calls"] for m in METHODS},
            "fermi": {key: result[key] for key in ("train_score", "stop_reason", "candidates_scored", "prompts_kept")},
            "fermi_compile_calls": {"task": result["calls"]["compile_task"],
                                    "proposer": result["calls"]["compile_proposer"]},
            "usage": saved["usage"],
            "seconds": saved["timing"]["seconds"],
        })
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    overall = {}
    for method in METHODS:
        values = [r["accuracy"][method] for r in rows if r["accuracy"][method] is not None]
        low, high = bootstrap_ci(values)
        overall[method] = {"mean_accuracy": sum(values) / len(values) if values else None, "ci95": [low, high],
                           "users": len(values)}
    return overall


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "method", "accuracy", "n_train", "n_test", "test_calls", "compile_task_calls",
                         "compile_proposer_calls"])
        for row in rows:
            for method in METHODS:
                compile_calls = row["fermi_compile_calls"] if method == "fermi" else {"task": 0, "proposer": 0}
                accuracy = row["accuracy"][method]
                writer.writerow([row["user_id"], method, "" if accuracy is None else f"{accuracy:.4f}",
                                 row["n_train"], row["n_test"], row["test_calls"][method], compile_calls["task"],
                                 compile_calls["proposer"]])


def plot(path: Path, rows: Sequence[dict[str, Any]], overall: dict[str, Any]) -> bool:
    """Grouped bars: accuracy per user and method, plus the mean with its 95% CI. False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed, so no plot.png: pip install 'fermi-dspy[plot]'")
        return False
    groups = [r["user_id"] for r in rows] + ["mean"]
    width = 0.8 / len(METHODS)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.4 * len(groups) + 2), 4.2))
    for index, method in enumerate(METHODS):
        mean = overall[method]["mean_accuracy"] or 0.0
        values = [r["accuracy"][method] or 0.0 for r in rows] + [mean]
        positions = [g + (index - (len(METHODS) - 1) / 2) * width for g in range(len(groups))]
        low, high = overall[method]["ci95"]
        errors = [[0] * len(rows) + [max(0.0, mean - low)], [0] * len(rows) + [max(0.0, high - mean)]]
        axes.bar(positions, values, width, label=METHOD_LABELS[method], yerr=errors, capsize=3)
    axes.set_xticks(range(len(groups)), groups, rotation=20)
    axes.set_ylabel("test accuracy (share of the user's answers matched)")
    axes.set_ylim(0, 1)
    axes.set_title("Per-user accuracy on held-out answers")
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def format_table(rows: Sequence[dict[str, Any]], overall: dict[str, Any]) -> str:
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    header = f"{'user':<28}" + "".join(f"{METHOD_LABELS[m]:>20}" for m in METHODS) + f"{'Fermi compile':>16}"
    lines = [header, "-" * len(header)]
    for row in rows:
        calls = row["fermi_compile_calls"]["task"] + row["fermi_compile_calls"]["proposer"]
        lines.append(f"{row['user_id']:<28}" + "".join(f"{number(row['accuracy'][m]):>20}" for m in METHODS)
                     + f"{calls:>10} calls")
    lines.append("-" * len(header))
    cells = []
    for method in METHODS:
        low, high = overall[method]["ci95"]
        cells.append(f"{number(overall[method]['mean_accuracy']):>8} [{low:.2f},{high:.2f}]")
    lines.append(f"{'mean (95% CI)':<28}" + "".join(f"{c:>20}" for c in cells))
    return "\n".join(lines)


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
        settings: What to run.
        out_dir: The run directory; users already finished there with the same settings are skipped.
        task_lm: The task LM spec or `LMConfig` (None: `$FERMI_LM`, else the local model).
        proposer_lm: The proposer LM spec or `LMConfig` (None: `$FERMI_PROPOSER_LM`, else as the task LM).
        display_progress: Show the progress bar over users.

    Raises:
        ValueError: No user has enough answers, or `out_dir` holds a run with other settings.
    """
    started = time.perf_counter()
    users, source = prepare_users(settings.dataset, data_path=settings.data_path, on_bad_record="skip",
                                  limit=settings.users, n_train=settings.n_train, n_test=settings.n_test,
                                  seed=settings.seed)
    if not users:
        raise ValueError(f"No user in {source.path or settings.dataset} has {settings.n_train + settings.n_test} "
                         "valid answers; lower --train/--test.")
    job = MainJob(OpinionQA(), fermi=settings.fermi())
    run_settings = RunSettings(seed=settings.seed, max_workers=1, num_threads=settings.num_threads,
                               max_calls_per_user=settings.max_calls_per_user, on_bad_record="skip",
                               display_progress=display_progress)
    summary = run_user_jobs(users, job, run_dir=out_dir, task_lm=task_lm, proposer_lm=proposer_lm,
                            settings=run_settings, source=source)
    run_dir = RunDir(out_dir)
    rows = user_rows(run_dir, [u.user_id for u in users])
    overall = summarize(rows)
    manifest = run_dir.read_manifest() or {}
    report = {
        "settings": asdict(settings),
        "data": {"dataset": source.dataset, "path": source.path, "sha256": source.sha256,
                 "problems_skipped": len(source.problems)},
        "lms": manifest.get("identity", {}).get("lms"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "dspy": dspy.__version__},
        "methods": {m: METHOD_LABELS[m] for m in METHODS},
        "overall": overall,
        "users": rows,
        "failures": [asdict(f) if dataclasses.is_dataclass(f) else f for f in summary.failures],
        "run_status": summary.status,
        "wall_seconds": time.perf_counter() - started,
    }
    run_dir.write_json("report.json", report)
    write_csv(out_dir / "results.csv", rows)
    if rows:
        plot(out_dir / "plot.png", rows, overall)
    report["table"] = format_table(rows, overall)
    return report


def load_personalized(out_dir: Path, user_id: str) -> PersonalizedProgram:
    """Load a user's personalized program from a main-job run directory."""
    program = PersonalizedProgram(OpinionQA())
    program.load(str(RunDir(out_dir).user_path(user_id) / "program.json"))
    return program


# -- the `fermi-dspy run` command -----------------------------------------------------------------------------------

summary = "the main job: personalize a few real users and compare with baselines"
description = ("Personalize a few real users with Fermi and score it, the plain student and the profile-in-prompt "
               "student on each user's held-out answers.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `fermi-dspy run` to `parser`."""
    defaults = MainJobSettings()
    parser.add_argument("--data", default=defaults.dataset, help="panelists (default), hwang or global")
    parser.add_argument("--data-path", default=None, help="a data file or folder instead of ../shared/data")
    parser.add_argument("--users", type=int, default=defaults.users, help="number of users (default %(default)s)")
    parser.add_argument("--train", type=int, default=None, help=f"few-shot answers per user (default "
                        f"{defaults.n_train}; {PAPER_SETTINGS['n_train']} with --paper)")
    parser.add_argument("--test", type=int, default=defaults.n_test, help="held-out answers per user (default "
                        "%(default)s)")
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


def main(args: argparse.Namespace) -> int:
    """Run `fermi-dspy run` with parsed arguments; return the exit status (3 if some user failed)."""
    paper = PAPER_SETTINGS if args.paper else {}
    defaults = MainJobSettings()

    def pick(value: int | None, key: str) -> int:
        return value if value is not None else paper.get(key, getattr(defaults, key))

    settings = MainJobSettings(
        dataset=args.data, data_path=args.data_path, users=args.users, n_train=pick(args.train, "n_train"),
        n_test=args.test, seed=args.seed, num_iterations=pick(args.iterations, "num_iterations"),
        num_candidates=pick(args.candidates, "num_candidates"), memory_size=pick(args.memory, "memory_size"),
        num_threads=args.threads,
    )
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
