"""Benchmark many-user runs on this machine with the real local LM: users per minute with the local threads engine
and with Ray on the same cores, and the overhead of resuming a finished run.

Both engines personalize the same real users (OpinionQA, Hwang et al. records) with the same small Fermi settings
and the embedded local model; DSPy's response cache is off, so every LM call is really made.

* threads: one process, one llama.cpp engine using all `--cores` threads, `--threads-workers` users at once (the
  engine runs one generation at a time, so more workers only overlap Python work); "threads-1t" (optional) is the
  same with one llama.cpp thread;
* ray: a local Ray instance with `--cores` CPUs, one user per CPU, each Ray worker with its own engine on one thread;
* resume: the threads command again on its finished run directory (no LM call; reads and checks every result).

Columns: users done, wall seconds (Ray start excluded; model loads included), users per minute on that wall time,
LM calls, calls per second, and the 1-minute load average after the row (above the core count means another
process competed for the CPU). The per-user results of the two engines are compared (same best prompt and scores).

Run from the repository root (about 10 minutes with the defaults):
    python -m programs.bench_runs
    python -m programs.bench_runs --users 4 --model smollm2-135m --out runs/bench-runs-small
"""

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from fermi_dspy.data import load_users
from fermi_dspy.runs import LMConfig, RunSettings, RunSummary, personalize_users

logger = logging.getLogger(__name__)


def lm_configs(model: str, local_threads: int, proposer_max_tokens: int) -> dict[str, LMConfig]:
    """Task and proposer LMs: the embedded model, uncached, with `local_threads` CPU threads per engine."""
    spec = f"local:{model}"
    return {
        "task_lm": LMConfig(spec, local_threads=local_threads, cache=False),
        "proposer_lm": LMConfig(spec, local_threads=local_threads, cache=False, max_tokens=proposer_max_tokens),
    }


def measure(label: str, run: dict[str, Any]) -> tuple[dict[str, Any], RunSummary]:
    """Run `personalize_users(**run)` and time it."""
    started = time.perf_counter()
    summary = personalize_users(**run)
    seconds = time.perf_counter() - started
    inv = summary.this_invocation
    row = {
        "engine": label,
        "users": summary.users,
        "done": summary.done,
        "failed": summary.failed,
        "users_run": inv["users_run"],
        "seconds": round(seconds, 2),
        "users_per_minute": round(inv["users_run"] / seconds * 60, 3) if seconds else 0.0,
        "lm_calls": inv["lm_calls"],
        "calls_per_second": round(inv["lm_calls"] / seconds, 3) if seconds else 0.0,
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }
    logger.info("%s: %s", label, row)
    return row, summary


def per_user(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each user's result (without timing) from a run directory."""
    out = {}
    for path in sorted(run_dir.glob("users/*/result.json")):
        data = json.loads(path.read_text())
        out[data["user_id"]] = {"result": data["result"], "calls": data["usage"]["calls"]}
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (f"{'engine':<34}{'users':>6}{'seconds':>9}{'users/min':>10}{'LM calls':>9}{'calls/s':>8}"
              f"{'load':>6}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['engine']:<34}{r['users_run']:>6}{r['seconds']:>9.1f}{r['users_per_minute']:>10.2f}"
                     f"{r['lm_calls']:>9}{r['calls_per_second']:>8.2f}{r['load_average_1min_after']:>6.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=2)
    parser.add_argument("--train", type=int, default=6)
    parser.add_argument("--test", type=int, default=6)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--threads-workers", type=int, default=1, help="users at once on the threads engine")
    parser.add_argument("--proposer-max-tokens", type=int, default=256)
    parser.add_argument("--engines", default="threads,ray")
    parser.add_argument("--out", default="runs/bench-runs")
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    logging.getLogger("fermi_dspy.runs").setLevel(logging.INFO)

    out = Path(options.out)
    loaded = load_users("hwang", on_bad_record="skip", min_examples=options.train + options.test)
    common = {
        "users": loaded, "limit": options.users, "n_train": options.train, "n_test": options.test,
        "fermi": {"num_iterations": options.iterations, "num_candidates": options.candidates,
                  "retrieval_fields": ["question"]},
    }

    def settings(engine: str, workers: int) -> RunSettings:
        return RunSettings(engine=engine, max_workers=workers, on_bad_record="skip", display_progress=False)

    rows: list[dict[str, Any]] = []
    engines = options.engines.split(",")
    report: dict[str, Any] = {"settings": vars(options), "machine": {"cpus": os.cpu_count()}, "rows": rows}

    if "threads-1t" in engines:
        shutil.rmtree(out / "threads-1t", ignore_errors=True)
        run = {**common, **lm_configs(options.model, 1, options.proposer_max_tokens), "run_dir": out / "threads-1t",
               "settings": settings("threads", options.threads_workers)}
        rows.append(measure(f"threads ({options.threads_workers}w x 1 LM thread)", run)[0])
        resume_row, resumed = measure("resume finished (threads-1t)", run)
        assert resumed.this_invocation["users_run"] == 0 and resumed.this_invocation["lm_calls"] == 0
        rows.append(resume_row)
        report["resume_overhead_seconds"] = resume_row["seconds"]

    if "threads" in engines:
        shutil.rmtree(out / "threads", ignore_errors=True)
        threads_run = {**common, **lm_configs(options.model, options.cores, options.proposer_max_tokens),
                       "run_dir": out / "threads", "settings": settings("threads", options.threads_workers)}
        row, _ = measure(f"threads ({options.threads_workers}w x {options.cores} LM threads)", threads_run)
        rows.append(row)
        resume_row, resumed = measure("resume finished (threads)", threads_run)
        assert resumed.this_invocation["users_run"] == 0 and resumed.this_invocation["lm_calls"] == 0
        rows.append(resume_row)
        report["resume_overhead_seconds"] = resume_row["seconds"]

    if "ray" in engines:
        import ray

        from fermi_dspy.runs.engines import forwarded_env

        shutil.rmtree(out / "ray", ignore_errors=True)
        started = time.perf_counter()
        ray.init(num_cpus=options.cores, include_dashboard=False, runtime_env={"env_vars": forwarded_env()},
                 logging_level="ERROR", log_to_driver=False)
        report["ray_start_seconds"] = round(time.perf_counter() - started, 2)
        try:
            ray_run = {**common, **lm_configs(options.model, 1, options.proposer_max_tokens), "run_dir": out / "ray",
                       "settings": settings("ray", options.cores)}
            row, _ = measure(f"ray ({options.cores}w x 1 LM thread)", ray_run)
            rows.append(row)
        finally:
            ray.shutdown()

    local = next((name for name in ("threads", "threads-1t") if name in engines), None)
    if local and "ray" in engines:
        a, b = per_user(out / local), per_user(out / "ray")
        same = [u for u in a if u in b and a[u] == b[u]]
        report["same_results"] = {"compared": f"{local} vs ray", "users_compared": len(a), "identical": len(same),
                                  "note": "llama.cpp's thread count can change floating-point sums"}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=str))
    print(format_table(rows))
    for key in ("ray_start_seconds", "resume_overhead_seconds", "same_results"):
        if key in report:
            print(f"{key}: {report[key]}")
    print(f"Report: {out / 'bench.json'}")


if __name__ == "__main__":
    main()
