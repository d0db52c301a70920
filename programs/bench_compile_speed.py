"""Benchmark: one real user's Fermi compile with the paper's settings on a local LM, and where the time goes.

    python -m programs.bench_compile_speed                         # Qwen-0.5B, in process, T=10 K=4, 20 answers
    python -m programs.bench_compile_speed --model smollm2-135m --iterations 2
    python -m programs.bench_compile_speed --route server

Prints seconds per scoring call (the proposer's share included), calls per second and seconds per compile, against
the target of a paper-sized compile (about 640 task-LM calls) in under 5 minutes, i.e. under 0.45 s per call.
DSPy's response cache is off, so every call is really made. Nothing here is a test: it measures.
"""

import argparse
import json
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy

from fermi_dspy import Fermi
from fermi_dspy.accounting import UsageMeter
from fermi_dspy.data import load_users, split_user
from fermi_dspy.lm import build_lm
from fermi_dspy.programs import OpinionQA

TARGET_SECONDS = 300.0
TARGET_CALLS = 640


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--proposer-model", default=None, help="default: the same model")
    parser.add_argument("--route", choices=["inprocess", "server"], default="inprocess")
    parser.add_argument("--data", default="panelists")
    parser.add_argument("--user", type=int, default=0, help="index of the user in the data file")
    parser.add_argument("--train", type=int, default=20, help="20 answers: 16 scored + 4 demonstrations")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    record = load_users(args.data, on_bad_record="skip")[args.user]
    split = split_user(record, n_train=args.train, n_test=1, seed=0)
    task_lm = build_lm(f"local:{args.model}", role="task", route=args.route, cache=False)
    proposer_lm = build_lm(f"local:{args.proposer_model or args.model}", role="proposer", route=args.route,
                           cache=False)
    with dspy.context(lm=task_lm):  # load the model before timing
        OpinionQA()(**split.train[0].inputs())

    task_meter, proposer_meter = UsageMeter(), UsageMeter()  # split the LM time between the roles
    optimizer = Fermi(prompt_model=proposer_meter.track(proposer_lm), task_model=task_meter.track(task_lm),
                      num_iterations=args.iterations,
                      num_candidates=args.candidates, retrieval_fields=["question"], num_threads=args.threads)
    started = time.perf_counter()
    program = optimizer.compile(OpinionQA(), trainset=split.train, profile=record.profile)
    seconds = time.perf_counter() - started
    task_seconds, proposer_seconds = task_meter.lm_seconds, proposer_meter.lm_seconds
    result = program.detailed_results
    task_calls, proposer_calls = result.task_usage.calls, result.proposer_usage.calls
    per_call = seconds / task_calls
    figures = {
        "model": args.model, "proposer_model": args.proposer_model or args.model, "route": args.route,
        "user": record.user_id, "optimization_examples": result.num_optimization_examples,
        "iterations_run": len(result.iterations), "stop_reason": result.stop_reason,
        "task_calls": task_calls, "proposer_calls": proposer_calls, "failed_calls":
        result.task_usage.failed_calls + result.proposer_usage.failed_calls,
        "task_tokens": result.task_usage.total_tokens, "proposer_tokens": result.proposer_usage.total_tokens,
        "task_tokens_per_call": round(result.task_usage.total_tokens / max(task_calls, 1)),
        "proposer_tokens_per_call": round(result.proposer_usage.total_tokens / max(proposer_calls, 1)),
        "seconds_in_task_lm": round(task_seconds, 1),
        "seconds_in_proposer_lm": round(proposer_seconds, 1),
        "seconds_per_task_call": round(task_seconds / max(task_calls, 1), 3),
        "seconds_per_proposer_call": round(proposer_seconds / max(proposer_calls, 1), 2),
        "seconds_outside_lm": round(seconds - task_seconds - proposer_seconds, 1),
        "compile_seconds": round(seconds, 1), "seconds_per_scoring_call": round(per_call, 3),
        "calls_per_second": round((task_calls + proposer_calls) / seconds, 2),
        "projected_seconds_for_640_calls": round(per_call * TARGET_CALLS, 1),
        "best_train_score": round(result.best_score, 3),
    }
    for key, value in figures.items():
        print(f"{key:32} {value}")
    verdict = "meets" if per_call * TARGET_CALLS <= TARGET_SECONDS else "misses"
    print(f"\n{verdict} the target: {per_call:.3f} s per scoring call (proposer share included) vs "
          f"{TARGET_SECONDS / TARGET_CALLS:.3f} s; a 640-call compile takes ~{per_call * TARGET_CALLS / 60:.1f} min")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
