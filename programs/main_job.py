"""The main job: personalize a few real users with Fermi and compare with two baselines on their held-out answers.

For each user: split the user's answers into few-shot train and held-out test (seeded), then score on the test
answers (1) the plain student, (2) the student with the profile in its prompt and (3) the Fermi-personalized
student compiled on the train answers. Writes a run directory:

    report.json        settings, data source, LMs, per-user scores, LM calls and tokens, wall time
    results.csv        one row per (user, method)
    plot.png           accuracy per user and method
    users/<id>/program.json   the user's personalized program (PersonalizedProgram.load)
    users/<id>/result.json    the user's scores, written as soon as the user is done

Re-running with the same settings and output directory skips users that are already done.
"""

import csv
import json
import logging
import os
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dspy
from tqdm import tqdm

from fermi_dspy import Fermi, PersonalizedProgram
from fermi_dspy.data import UserRecord, load_users, split_user
from programs.baselines import profile_in_prompt, zero_shot
from programs.evaluation import evaluate_on_test
from programs.opinion_qa import OpinionQA

logger = logging.getLogger(__name__)

METHODS = ("zero_shot", "profile_prompt", "fermi")
METHOD_LABELS = {"zero_shot": "plain student", "profile_prompt": "profile in prompt", "fermi": "Fermi"}

PAPER_SETTINGS = {"num_iterations": 10, "num_candidates": 4, "memory_size": 5, "n_train": 20}


@dataclass(frozen=True)
class MainJobSettings:
    """What the main job runs. Defaults finish in a few minutes on 2 cores with the default local LM.

    Attributes:
        dataset: "panelists", "hwang" or "global" (see `fermi_dspy.data`).
        data_path: A data file or directory instead of the default `../shared/data`.
        users: How many users (the first ones in the file).
        n_train: Few-shot answers per user Fermi learns from (~80% scored, ~20% shown to the proposer).
        n_test: Held-out answers per user every method is scored on.
        seed: Seeds the splits and Fermi.
        num_iterations: Fermi's T.
        num_candidates: Fermi's K.
        memory_size: Fermi's L.
        task_lm: LM spec of the task LM ("local", "local:<model>", a GGUF path, or a DSPy/LiteLLM model string).
        proposer_lm: LM spec of the proposer LM (defaults like the task LM's).
        local_model: The embedded model "local" means.
        route: "inprocess" or "server" for local models.
        api_base: An OpenAI-compatible server for remote specs (the API key is never stored).
        num_threads: Parallel LM calls (1 suits the local in-process engine, which runs one call at a time).
    """

    dataset: str = "panelists"
    data_path: str | None = None
    users: int = 3
    n_train: int = 10
    n_test: int = 20
    seed: int = 0
    num_iterations: int = 3
    num_candidates: int = 3
    memory_size: int = 5
    task_lm: str | None = None
    proposer_lm: str | None = None
    local_model: str | None = None
    route: str = "inprocess"
    api_base: str | None = None
    num_threads: int = 1


@dataclass
class UserOutcome:
    """One user's results (what users/<id>/result.json holds)."""

    user_id: str
    n_train: int
    n_test: int
    accuracy: dict[str, float]
    scores: dict[str, list[float]]
    seconds: dict[str, float]
    calls: dict[str, dict[str, int]]
    fermi: dict[str, Any] = field(default_factory=dict)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file and rename it over `path`, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _calls(usage: Any) -> dict[str, int]:
    return {"calls": usage.calls, "failed": usage.failed_calls, "tokens": usage.total_tokens}


def run_user(
    record: UserRecord,
    settings: MainJobSettings,
    *,
    task_lm: dspy.BaseLM,
    proposer_lm: dspy.BaseLM,
    user_dir: Path,
) -> UserOutcome:
    """Split one user's answers, run the three methods, save the personalized program, return the scores."""
    split = split_user(record, n_train=settings.n_train, n_test=settings.n_test, seed=settings.seed)
    student = OpinionQA()
    accuracy, scores, seconds, calls = {}, {}, {}, {}

    def evaluate(method: str, program: dspy.Module, extra_seconds: float = 0.0) -> None:
        started = time.perf_counter()
        result = evaluate_on_test(program, split.test, lm=task_lm, num_threads=settings.num_threads)
        accuracy[method] = result.accuracy
        scores[method] = list(result.scores)
        seconds[method] = extra_seconds + time.perf_counter() - started
        calls[f"{method}_test"] = _calls(result.usage)

    evaluate("zero_shot", zero_shot(student))
    evaluate("profile_prompt", profile_in_prompt(student, record.profile))

    started = time.perf_counter()
    optimizer = Fermi(
        prompt_model=proposer_lm,
        task_model=task_lm,
        num_iterations=settings.num_iterations,
        num_candidates=settings.num_candidates,
        memory_size=settings.memory_size,
        retrieval_fields=["question"],
        num_threads=settings.num_threads,
        seed=settings.seed,
    )
    personal = optimizer.compile(student, trainset=split.train, profile=record.profile)
    compile_seconds = time.perf_counter() - started
    user_dir.mkdir(parents=True, exist_ok=True)
    personal.save(str(user_dir / "program.json"))
    result = personal.detailed_results
    calls["fermi_compile_task"] = _calls(result.task_usage)
    calls["fermi_compile_proposer"] = _calls(result.proposer_usage)
    evaluate("fermi", personal, extra_seconds=compile_seconds)
    fermi = {
        "train_score": result.best_score,
        "stop_reason": result.stop_reason,
        "candidates_scored": result.num_candidates_scored,
        "compile_seconds": compile_seconds,
        "prompts_kept": len(personal.prompts),
    }
    return UserOutcome(record.user_id, len(split.train), len(split.test), accuracy, scores, seconds, calls, fermi)


def bootstrap_ci(values: Sequence[float], *, seed: int = 0, rounds: int = 2000) -> tuple[float, float]:
    """95% bootstrap confidence interval of the mean over users."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (0.0, 0.0)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def describe_lm(lm: dspy.BaseLM) -> dict[str, Any]:
    """What an LM is, without secrets."""
    return {"model": lm.model, "temperature": lm.kwargs.get("temperature"), "max_tokens": lm.kwargs.get("max_tokens")}


def summarize(outcomes: Sequence[UserOutcome]) -> dict[str, Any]:
    overall = {}
    for method in METHODS:
        values = [o.accuracy[method] for o in outcomes]
        low, high = bootstrap_ci(values)
        overall[method] = {"mean_accuracy": sum(values) / len(values) if values else 0.0, "ci95": [low, high],
                           "users": len(values)}
    return overall


def write_csv(path: Path, outcomes: Sequence[UserOutcome]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "method", "accuracy", "n_train", "n_test", "test_calls", "compile_task_calls",
                         "compile_proposer_calls", "tokens", "seconds"])
        for o in outcomes:
            for method in METHODS:
                compile_task = o.calls.get(f"{method}_compile_task", {})
                compile_proposer = o.calls.get(f"{method}_compile_proposer", {})
                test = o.calls[f"{method}_test"]
                tokens = test["tokens"] + compile_task.get("tokens", 0) + compile_proposer.get("tokens", 0)
                writer.writerow([o.user_id, method, f"{o.accuracy[method]:.4f}", o.n_train, o.n_test, test["calls"],
                                 compile_task.get("calls", 0), compile_proposer.get("calls", 0), tokens,
                                 f"{o.seconds[method]:.1f}"])


def plot(path: Path, outcomes: Sequence[UserOutcome], overall: dict[str, Any]) -> bool:
    """Grouped bars: accuracy per user and method, plus the mean with its 95% CI. False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed, so no plot.png: pip install 'fermi-dspy[plot]'")
        return False
    groups = [o.user_id for o in outcomes] + ["mean"]
    width = 0.8 / len(METHODS)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.4 * len(groups) + 2), 4.2))
    for index, method in enumerate(METHODS):
        values = [o.accuracy[method] for o in outcomes] + [overall[method]["mean_accuracy"]]
        positions = [g + (index - (len(METHODS) - 1) / 2) * width for g in range(len(groups))]
        low, high = overall[method]["ci95"]
        errors = [[0] * len(outcomes) + [values[-1] - low], [0] * len(outcomes) + [high - values[-1]]]
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


def format_table(outcomes: Sequence[UserOutcome], overall: dict[str, Any]) -> str:
    header = f"{'user':<28}" + "".join(f"{METHOD_LABELS[m]:>20}" for m in METHODS) + f"{'Fermi compile':>16}"
    lines = [header, "-" * len(header)]
    for o in outcomes:
        compile_calls = o.calls["fermi_compile_task"]["calls"] + o.calls["fermi_compile_proposer"]["calls"]
        lines.append(f"{o.user_id:<28}" + "".join(f"{o.accuracy[m]:>20.3f}" for m in METHODS)
                     + f"{compile_calls:>10} calls")
    lines.append("-" * len(header))
    lines.append(f"{'mean (95% CI)':<28}" + "".join(
        f"{overall[m]['mean_accuracy']:>8.3f} [{overall[m]['ci95'][0]:.2f},{overall[m]['ci95'][1]:.2f}]"
        for m in METHODS))
    return "\n".join(lines)


def run_main_job(
    settings: MainJobSettings,
    out_dir: Path,
    *,
    task_lm: dspy.BaseLM | None = None,
    proposer_lm: dspy.BaseLM | None = None,
    api_key: str | None = None,
    display_progress: bool = True,
) -> dict[str, Any]:
    """Run the main job into `out_dir` and return the report.

    Args:
        settings: What to run.
        out_dir: The run directory (created; users already done there with the same settings are skipped).
        task_lm: A ready LM instead of `settings.task_lm` (tests pass scripted LMs).
        proposer_lm: A ready LM instead of `settings.proposer_lm`.
        api_key: API key for remote LMs; never written anywhere.
        display_progress: Show progress bars.
    """
    from fermi_dspy.lm import build_lm

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    settings_path = out_dir / "settings.json"
    if settings_path.exists() and json.loads(settings_path.read_text()) != asdict(settings):
        raise ValueError(
            f"{out_dir} holds a run with other settings ({settings_path}); choose another --out directory."
        )
    write_json_atomic(settings_path, asdict(settings))

    loaded = load_users(settings.dataset, settings.data_path, on_bad_record="skip",
                        min_examples=settings.n_train + settings.n_test)
    for problem in loaded.problems:
        logger.warning("Skipped bad record: %s", problem)
    records = list(loaded.records)[: settings.users]
    if not records:
        raise ValueError(f"No user in {loaded.path} has {settings.n_train + settings.n_test} valid answers.")

    task_lm = task_lm or build_lm(settings.task_lm, role="task", local_model=settings.local_model,
                                  route=settings.route, api_base=settings.api_base, api_key=api_key)
    proposer_lm = proposer_lm or build_lm(settings.proposer_lm, role="proposer", local_model=settings.local_model,
                                          route=settings.route, api_base=settings.api_base, api_key=api_key)

    outcomes: list[UserOutcome] = []
    bar = tqdm(records, desc="users", unit="user", disable=not display_progress)
    for record in bar:
        user_dir = out_dir / "users" / record.user_id
        result_path = user_dir / "result.json"
        if result_path.exists():
            outcomes.append(UserOutcome(**json.loads(result_path.read_text())))
            logger.info("User %s already done; skipped.", record.user_id)
            continue
        bar.set_postfix(user=record.user_id)
        with dspy.context(lm=task_lm):
            outcome = run_user(record, settings, task_lm=task_lm, proposer_lm=proposer_lm, user_dir=user_dir)
        write_json_atomic(result_path, asdict(outcome))
        outcomes.append(outcome)
        logger.info("User %s: %s", record.user_id, {m: round(a, 3) for m, a in outcome.accuracy.items()})

    overall = summarize(outcomes)
    report = {
        "settings": asdict(settings),
        "data": {"dataset": loaded.dataset, "path": str(loaded.path), "problems_skipped": len(loaded.problems)},
        "lms": {"task": describe_lm(task_lm), "proposer": describe_lm(proposer_lm)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "dspy": dspy.__version__},
        "methods": {m: METHOD_LABELS[m] for m in METHODS},
        "overall": overall,
        "users": [asdict(o) for o in outcomes],
        "wall_seconds": time.perf_counter() - started,
    }
    write_json_atomic(out_dir / "report.json", report)
    write_csv(out_dir / "results.csv", outcomes)
    plot(out_dir / "plot.png", outcomes, overall)
    report["table"] = format_table(outcomes, overall)
    return report


def load_personalized(out_dir: Path, user_id: str) -> PersonalizedProgram:
    """Load a user's personalized program from a main-job run directory."""
    program = PersonalizedProgram(OpinionQA())
    program.load(str(out_dir / "users" / user_id / "program.json"))
    return program
