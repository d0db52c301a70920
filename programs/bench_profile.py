"""Where the main job's time goes, cold: every local-LM call with its phase, tokens and seconds.

    python -m programs.bench_profile                  # the main job's defaults (3 panelists), cold
    python -m programs.bench_profile --paper --users 1 # one paper-default compile (T=10, K=4, 20 train answers)

Cold means what a new user waits: unless `DSPY_CACHEDIR` is set, the command re-runs itself in a fresh process with
an empty DSPy cache in a new temporary folder. For every call of the embedded llama.cpp engine it records the phase
it ran in (scoring = Fermi's task calls on the training answers, proposing = the proposer, testing = every method's
held-out answers), the prompt tokens, the tokens reused from a KV slot, the tokens really evaluated, the generated
tokens and the seconds. It prints one row per phase, with the engine's raw prompt speed measured on the same machine
right after the run, so "seconds per call" can be compared with "evaluated tokens / raw tokens per second". The
calls go to `<out>/calls.jsonl` and the table to `<out>/profile.json`.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

from programs.cold import rerun_cold


def raw_prompt_speed(engine: Any, prompt_tokens: int = 200, repeats: int = 3) -> float:
    """Tokens per second of a plain llama.cpp prompt evaluation (no reuse) on one of the engine's contexts."""
    llm = engine._ensure_loaded()
    tokens = llm.tokenize(("Survey question: how much do you trust the news media to report fairly? " * 40).encode(),
                          add_bos=False, special=False)[:prompt_tokens]
    speeds = []
    for _ in range(repeats):
        llm.reset()
        started = time.perf_counter()
        llm.eval(tokens)
        speeds.append(len(tokens) / (time.perf_counter() - started))
    llm.reset()
    return statistics.median(speeds)


def summarize(calls: list[dict[str, Any]], raw_tps: float) -> list[dict[str, Any]]:
    """One row per phase: calls, mean tokens, seconds per call and the seconds the raw prompt speed predicts."""
    by_phase: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in calls:
        by_phase[call["phase"]].append(call)
    rows = []
    for phase in ("scoring", "proposing", "testing", "other"):
        group = by_phase.get(phase, [])
        if not group:
            continue
        n = len(group)

        def mean(key: str, group: list[dict[str, Any]] = group) -> float:
            return sum(c[key] for c in group) / len(group)

        rows.append({
            "phase": phase, "calls": n, "seconds": sum(c["seconds"] for c in group),
            "prompt_tokens": mean("prompt_tokens"), "cached_tokens": mean("cached_tokens"),
            "evaluated_tokens": mean("evaluated_tokens"), "generated_tokens": mean("generated_tokens"),
            "s_per_call": mean("seconds"), "predicted_s_per_call": mean("evaluated_tokens") / raw_tps,
            "modes": sorted({c["mode"] for c in group}),
        })
    return rows


def format_rows(rows: list[dict[str, Any]], raw_tps: float) -> str:
    header = (f"{'phase':<10} {'calls':>6} {'seconds':>8} {'s/call':>7} {'prompt':>7} {'reused':>7} {'evaluated':>9} "
              f"{'generated':>9} {'evaluated/raw':>13} {'ratio':>6}  mode")
    lines = [header, "-" * len(header)]
    for r in rows:
        ratio = r["s_per_call"] / r["predicted_s_per_call"] if r["predicted_s_per_call"] else float("nan")
        lines.append(f"{r['phase']:<10} {r['calls']:>6} {r['seconds']:>8.1f} {r['s_per_call']:>7.2f} "
                     f"{r['prompt_tokens']:>7.0f} {r['cached_tokens']:>7.0f} {r['evaluated_tokens']:>9.1f} "
                     f"{r['generated_tokens']:>9.1f} {r['predicted_s_per_call']:>12.2f}s {ratio:>6.2f}  "
                     f"{','.join(r['modes'])}")
    lines.append(f"raw prompt speed of the engine (no reuse, 200 tokens): {raw_tps:.0f} tokens/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="panelists")
    parser.add_argument("--users", type=int, default=None, help="default: the main job's")
    parser.add_argument("--train", type=int, default=None)
    parser.add_argument("--test", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--candidates", type=int, default=None)
    parser.add_argument("--paper", action="store_true", help="T=10, K=4, L=5, 20 training answers")
    parser.add_argument("--no-test", action="store_true", help="compile only (no held-out evaluation)")
    parser.add_argument("--out", default=None, help="run directory (default: a new temporary one)")
    args = parser.parse_args(argv)
    rerun_cold("programs.bench_profile")

    from fermi_dspy import progress
    from fermi_dspy.lm.config import local_lm
    from fermi_dspy.lm.llama_engine import listening_to_all_engines
    from programs.main_job import PAPER_SETTINGS, MainJobSettings, run_main_job

    defaults = MainJobSettings()
    paper = PAPER_SETTINGS if args.paper else {}

    def pick(value: int | None, key: str) -> int:
        return value if value is not None else paper.get(key, getattr(defaults, key))

    settings = MainJobSettings(dataset=args.data, users=args.users or defaults.users,
                               n_train=pick(args.train, "n_train"),
                               n_test=0 if args.no_test else (args.test or defaults.n_test),
                               num_iterations=pick(args.iterations, "num_iterations"),
                               num_candidates=pick(args.candidates, "num_candidates"),
                               memory_size=pick(None, "memory_size"))
    out = Path(args.out or tempfile.mkdtemp(prefix="fermi-profile-"))
    calls: list[dict[str, Any]] = []

    def record(stats: Any) -> None:
        calls.append({"phase": progress.current_phase() or "other", **asdict(stats), "time": time.time()})

    print(f"DSPy cache: {os.environ.get('DSPY_CACHEDIR')} (cold unless you set it); run directory: {out}")
    started = time.perf_counter()
    with listening_to_all_engines(record):
        report = run_main_job(settings, out, display_progress=True)
    wall = time.perf_counter() - started
    raw_tps = raw_prompt_speed(local_lm()._engine_spec)
    rows = summarize(calls, raw_tps)
    print(report["table"])
    print()
    print(format_rows(rows, raw_tps))
    users = max(1, len(report["users"]))
    print(f"wall time {wall:.0f} s for {len(report['users'])} user(s) ({wall / users:.0f} s per user); "
          f"{len(calls)} engine calls, {sum(c['seconds'] for c in calls):.0f} s inside the engine")
    with (out / "calls.jsonl").open("w") as handle:
        for call in calls:
            handle.write(json.dumps(call) + "\n")
    (out / "profile.json").write_text(json.dumps({"settings": asdict(settings), "wall_seconds": wall,
                                                  "raw_prompt_tokens_per_second": raw_tps, "phases": rows,
                                                  "cold_cache": os.environ.get("DSPY_CACHEDIR")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
