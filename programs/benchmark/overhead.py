"""Fermi's own overhead: the time a compile spends outside the LM, per candidate evaluation and as a share of a real
local-LM compile.

With an instant scripted LM, almost all of a compile's time is overhead. It is split into:

* DSPy's per-call floor: a plain `dspy.Predict` answering the same number of questions (adapter formatting and
  parsing, the LM client) — any DSPy program pays it;
* Fermi's own: the rest (proposals' rendering, memory, bookkeeping, building variants, retrieval data).

A candidate evaluation is one candidate prompt scored on one of the user's examples (one task-LM call). The share of a
real compile is estimated from the instant-LM overhead per evaluation times the real compile's evaluations, divided by
the real compile's wall time; it is also measured directly in the real run as (wall - time inside LM calls) / wall.
"""

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dspy

from fermi_dspy import Fermi
from fermi_dspy.accounting import UsageMeter
from fermi_dspy.runs import RunDir, UserData
from fermi_dspy.testing import instant_lm
from programs.baselines import zero_shot
from programs.benchmark.report import read_results
from programs.benchmark.settings import BenchmarkSettings
from programs.benchmark.users import benchmark_users
from programs.evaluation import evaluate_on_test
from programs.tasks import OPINION, TASKS, TaskSpec, task_for

TARGET_SHARE = 0.02
"""The overhead target: under 2% of a real local-LM compile."""


@dataclass(frozen=True)
class InstantCompile:
    """One Fermi compile with the instant scripted LMs.

    Attributes:
        seconds: Wall time of the compile.
        lm_seconds: Time inside LM calls (DSPy's LM client and the scripted engine).
        evaluations: Candidate evaluations (task-LM calls).
        proposer_calls: Proposer-LM calls.
        candidates: Candidate prompts scored.
    """

    seconds: float
    lm_seconds: float
    evaluations: int
    proposer_calls: int
    candidates: int

    @property
    def outside_lm_per_evaluation(self) -> float:
        return (self.seconds - self.lm_seconds) / max(self.evaluations, 1)


def instant_compile(user: UserData, *, num_iterations: int, num_candidates: int, memory_size: int,
                    seed: int = 0, spec: TaskSpec = TASKS[OPINION]) -> InstantCompile:
    """Compile one user with Fermi on instant scripted LMs and time it (the task's student, metric and retrieval)."""
    task, proposer = UsageMeter(), UsageMeter()
    optimizer = Fermi(metric=spec.fermi_metric, prompt_model=proposer.track(instant_lm("proposer")),
                      task_model=task.track(instant_lm()), num_iterations=num_iterations,
                      num_candidates=num_candidates, memory_size=memory_size, retrieval_fields=spec.retrieval_fields,
                      num_threads=1, seed=seed, display_progress=False)
    started = time.perf_counter()
    program = optimizer.compile(spec.student(), trainset=list(user.train), profile=user.profile)
    seconds = time.perf_counter() - started
    return InstantCompile(seconds, task.lm_seconds + proposer.lm_seconds, task.calls, proposer.calls,
                          program.detailed_results.num_candidates_scored)


def plain_dspy_per_call(examples: Sequence[dspy.Example], calls: int,
                        spec: TaskSpec = TASKS[OPINION]) -> tuple[float, float]:
    """(seconds outside the LM, seconds inside the LM) per call of the task's plain student on the instant LM."""
    meter = UsageMeter()
    batch = [examples[i % len(examples)] for i in range(calls)]
    started = time.perf_counter()
    evaluate_on_test(zero_shot(spec.student()), batch, lm=meter.track(instant_lm()), metric=spec.test_metric)
    seconds = time.perf_counter() - started
    inside = meter.lm_seconds
    return (seconds - inside) / calls, inside / calls


def real_fermi_compiles(run_dir: Path, user_ids: Sequence[str]) -> dict[str, Any] | None:
    """Fermi's compiles in a benchmark run directory (means over its users), or None when it has none."""
    results = [r for r in read_results(run_dir, user_ids, ("fermi",)) if r.ok]
    if not results:
        return None
    return {
        "source": str(run_dir),
        "users": len(results),
        "seconds": statistics.fmean(r.compile_seconds for r in results),
        "lm_seconds": statistics.fmean(r.compile_task.lm_seconds + r.compile_proposer.lm_seconds for r in results),
        "evaluations": statistics.fmean(r.compile_task.usage.calls for r in results),
        "proposer_calls": statistics.fmean(r.compile_proposer.usage.calls for r in results),
    }


def measure_overhead(settings: BenchmarkSettings, *, run_dir: Path | None = None, users: int = 3,
                     repeats: int = 3) -> dict[str, Any]:
    """Measure Fermi's overhead on the run's users and split with instant LMs, and compare with the real compiles.

    Args:
        settings: The benchmark settings (users, split, T, K, L) to compile with.
        run_dir: A benchmark run directory with real local-LM Fermi compiles of these settings, for the share.
        users: How many of the run's users to compile.
        repeats: Compiles per user (the median is kept).

    Returns:
        The measurement (also what overhead.json holds).
    """
    splits = benchmark_users(settings).users[:users]
    spec = task_for(settings.dataset)
    instant_compile(splits[0], num_iterations=1, num_candidates=1, memory_size=1, spec=spec)  # warm-up: imports, fits
    compiles = []
    for split in splits:
        runs = [instant_compile(split, num_iterations=settings.num_iterations, num_candidates=settings.num_candidates,
                                memory_size=settings.memory_size, seed=settings.seed, spec=spec)
                for _ in range(repeats)]
        compiles.append(sorted(runs, key=lambda c: c.seconds)[len(runs) // 2])
    evaluations = sum(c.evaluations for c in compiles)
    outside = sum(c.seconds - c.lm_seconds for c in compiles) / evaluations
    inside = sum(c.lm_seconds for c in compiles) / evaluations
    plain_outside, plain_inside = plain_dspy_per_call([e for s in splits for e in s.train], calls=evaluations,
                                                      spec=spec)
    fermi_own = outside - plain_outside
    measurement: dict[str, Any] = {
        "settings": {"dataset": settings.dataset, "n_train": settings.n_train, "seed": settings.seed,
                     "T": settings.num_iterations, "K": settings.num_candidates, "L": settings.memory_size,
                     "users": [s.user_id for s in splits], "repeats": repeats},
        "instant_compiles": [asdict(c) for c in compiles],
        "per_evaluation_ms": {
            "outside_lm": round(outside * 1000, 3),
            "dspy_predict_floor_outside_lm": round(plain_outside * 1000, 3),
            "fermi_own": round(fermi_own * 1000, 3),
            "inside_lm_client_instant": round(inside * 1000, 3),
            "plain_predict_inside_lm_client_instant": round(plain_inside * 1000, 3),
        },
        "target_share": TARGET_SHARE,
    }
    real = real_fermi_compiles(run_dir, [s.user_id for s in splits]) if run_dir else None
    if real is not None:
        seconds, evaluations = real["seconds"], real["evaluations"]
        estimated = outside * evaluations / seconds
        measurement["real_compile"] = {
            **real,
            "seconds_per_evaluation": round(seconds / max(evaluations, 1), 3),
            "estimated_outside_lm_share": round(estimated, 5),
            "estimated_fermi_own_share": round(fermi_own * evaluations / seconds, 5),
            "measured_outside_lm_share": round((seconds - real["lm_seconds"]) / seconds, 5),
            "meets_target": estimated < TARGET_SHARE,
        }
    return measurement


def render_overhead(measurement: dict[str, Any]) -> str:
    """overhead.md."""
    per = measurement["per_evaluation_ms"]
    s = measurement["settings"]
    lines = [
        "# Fermi's overhead outside the LM",
        "",
        f"Instant scripted LMs, {len(s['users'])} user(s) of `{s['dataset']}` with {s['n_train']} training answers, "
        f"T={s['T']}, K={s['K']}, L={s['L']}; median of {s['repeats']} compiles per user.",
        "",
        "| Per candidate evaluation (one prompt on one example) | ms |",
        "|---|---|",
        f"| Outside the LM, all (Fermi + DSPy adapter/Predict) | {per['outside_lm']:.3f} |",
        f"| of which a plain `dspy.Predict` call's own floor | {per['dspy_predict_floor_outside_lm']:.3f} |",
        f"| of which Fermi's own | {per['fermi_own']:.3f} |",
        f"| Inside the (instant) LM call: DSPy's LM client | {per['inside_lm_client_instant']:.3f} |",
    ]
    real = measurement.get("real_compile")
    if real:
        lines += [
            "",
            f"Real local-LM Fermi compiles ({real['users']} user(s) of {real['source']}): {real['seconds']:.1f} s "
            f"per compile, {real['evaluations']:.0f} evaluations + {real['proposer_calls']:.0f} proposer calls, "
            f"{real['seconds_per_evaluation']:.2f} s per evaluation.",
            "",
            "| Share of a real compile's wall time | |",
            "|---|---|",
            f"| Estimated: overhead outside the LM (instant-LM ms x real evaluations / real wall) | "
            f"{real['estimated_outside_lm_share']:.3%} |",
            f"| Estimated: Fermi's own part of it | {real['estimated_fermi_own_share']:.3%} |",
            f"| Measured in the real run: (wall - time inside LM calls) / wall | "
            f"{real['measured_outside_lm_share']:.3%} |",
            f"| Target | < {measurement['target_share']:.0%} ({'met' if real['meets_target'] else 'NOT met'}) |",
        ]
    return "\n".join(lines) + "\n"


def write_overhead(measurement: dict[str, Any], out_dir: Path) -> None:
    """Write overhead.json and overhead.md into `out_dir`."""
    RunDir(out_dir).write_json("overhead.json", measurement)
    RunDir(out_dir).write_text("overhead.md", render_overhead(measurement))


def load_settings(run_dir: Path) -> BenchmarkSettings:
    """The settings a benchmark run directory was made with."""
    return BenchmarkSettings.from_dict(json.loads((run_dir / "settings.json").read_text()))
