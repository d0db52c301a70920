"""Updating a user from new answers vs personalizing them afresh: LM calls and held-out accuracy, on real users.

    python -m programs.bench_incremental --users 3            # Hwang users: 10 answers, then 10 more; 10 held out

For each user (their answers in file order, split with a seed): a first compile on their first 10 answers (the
program a run would already hold), then, once 10 more answers arrive,

* **fresh**: a compile on all 20 answers with the paper's settings (T=10, K=4, L=5);
* **update**: `compile(..., init=first)`: the first program's prompts re-scored on the 10 new answers only, then
  `update_iterations` (default 2) iterations with K=4.

Both are scored on the same 10 held-out answers. Reported: task and proposer calls of each, accuracy with a 95%
bootstrap CI over users, and the update's share of the fresh compile's calls (target: at most a third, for accuracy
within the fresh compile's CI), and the paired difference update - fresh with its CI. Cold by default (a fresh DSPy
cache in a new process). Writes `--out` as JSON after every user, so a stopped run keeps the users it finished:
running the same command again skips them and goes on (a different `--out` starts over; other settings into the same
file are refused). Each row records the commit that answered it.
"""

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from fermi_dspy.files import write_atomic
from programs.benchmark.provenance import git_commit
from programs.cold import rerun_cold
from programs.stats import bootstrap_ci, paired_difference

SETTINGS = ("data", "first", "more", "test", "first_iterations", "update_iterations", "lm")
"""The arguments a finished user's row depends on: resuming into `--out` requires the same values."""


def previous_rows(out: Path, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows an earlier run of the same settings left in `out` (none if it does not exist).

    Raises:
        SystemExit: `out` holds rows of other settings (the message names them and the fix).
    """
    if not out.is_file():
        return []
    stored = json.loads(out.read_text())
    earlier = {k: stored.get("settings", {}).get(k) for k in SETTINGS}
    if earlier != settings:
        changed = ", ".join(f"{k}: {earlier[k]!r} there, {settings[k]!r} now" for k in SETTINGS
                            if earlier[k] != settings[k])
        raise SystemExit(f"{out} holds users measured with other settings ({changed}); pass another --out to start "
                         "a new measurement, or the same settings to continue that one.")
    return list(stored.get("users", []))


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Calls, accuracy with 95% CIs over users, and the paired difference update - fresh, over `rows`."""

    def total(kind: str) -> int:
        return sum(r[kind]["task"] + r[kind]["proposer"] for r in rows)

    summary: dict[str, Any] = {"users": len(rows), "calls_fresh": total("fresh"), "calls_update": total("update"),
                               "update_share_of_fresh_calls": total("update") / max(1, total("fresh"))}
    for kind in ("fresh", "update"):
        values = [r[kind]["accuracy"] for r in rows]
        summary[f"accuracy_{kind}"] = sum(values) / len(values)
        interval = bootstrap_ci(values)
        summary[f"accuracy_{kind}_ci95"] = (interval.low, interval.high)
        summary[f"seconds_{kind}"] = sum(r[kind]["seconds"] for r in rows)
    difference = paired_difference({r["user_id"]: r["update"]["accuracy"] for r in rows},
                                   {r["user_id"]: r["fresh"]["accuracy"] for r in rows})
    summary["update_minus_fresh"] = {"mean": difference.mean, "ci95": (difference.low, difference.high)}
    summary["accuracy_first_compile"] = sum(r["first_accuracy"] for r in rows) / len(rows)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """The summary as a small table on stdout."""
    print(f"\n{summary['users']} users{'LM calls':>12}{'accuracy':>10}  95% CI")
    for kind in ("fresh", "update"):
        low, high = summary[f"accuracy_{kind}_ci95"]
        print(f"{kind:<10}{summary[f'calls_{kind}']:>10}{summary[f'accuracy_{kind}']:>10.3f}  [{low:.3f}, {high:.3f}]")
    difference = summary["update_minus_fresh"]
    print(f"update - fresh: {difference['mean']:+.3f} [{difference['ci95'][0]:+.3f}, {difference['ci95'][1]:+.3f}]; "
          f"update / fresh calls: {summary['update_share_of_fresh_calls']:.2f}; first compile alone: accuracy "
          f"{summary['accuracy_first_compile']:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="hwang")
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--first", type=int, default=10, help="answers the first compile learns from")
    parser.add_argument("--more", type=int, default=10, help="answers that arrive later")
    parser.add_argument("--test", type=int, default=10, help="held-out answers")
    parser.add_argument("--first-iterations", type=int, default=3, help="T of the first compile")
    parser.add_argument("--update-iterations", type=int, default=2)
    parser.add_argument("--lm", default="local")
    parser.add_argument("--out", default="benchmarks/results/incremental.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    rows = previous_rows(out, {k: getattr(args, k) for k in SETTINGS})
    rerun_cold("programs.bench_incremental")

    import dspy

    from fermi_dspy import Fermi, answer_accuracy
    from fermi_dspy.data import load_users
    from fermi_dspy.lm import build_lm
    from fermi_dspy.programs import OpinionQA

    task_lm = build_lm(args.lm, role="task")
    proposer_lm = build_lm(args.lm, role="proposer")
    needed = args.first + args.more + args.test
    records = load_users(args.data, on_bad_record="skip", null_answers="skip", min_examples=needed).records
    records = sorted(records, key=lambda r: random.Random(f"{r.user_id}").random())[: args.users]
    paper = {"num_iterations": 10, "num_candidates": 4, "memory_size": 5}
    common = {"task_model": task_lm, "prompt_model": proposer_lm, "retrieval_fields": ["question"], "num_threads": 1,
              "display_progress": False}
    done = {row["user_id"] for row in rows}
    if done:
        print(f"{len(done)} user(s) already measured in {out}; going on with the others", flush=True)
    commit = git_commit()

    def save() -> None:
        payload = {"settings": vars(args), "summary": summarize(rows) if rows else None, "users": rows}
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, json.dumps(payload, indent=1))

    for record in records:
        if record.user_id in done:
            continue
        examples = list(record.examples[:needed])
        random.Random(0).shuffle(examples)
        first, more = examples[: args.first], examples[args.first : args.first + args.more]
        test = examples[args.first + args.more :]

        def accuracy(program: dspy.Module, test: list = test) -> float:
            with dspy.context(lm=task_lm):
                return sum(answer_accuracy(e, program(**e.inputs())) for e in test) / len(test)

        started = time.perf_counter()
        previous = Fermi(**common, **{**paper, "num_iterations": args.first_iterations}).compile(
            OpinionQA(), trainset=first, profile=record.profile)
        first_seconds = time.perf_counter() - started
        started = time.perf_counter()
        fresh = Fermi(**common, **paper).compile(OpinionQA(), trainset=first + more, profile=record.profile)
        fresh_seconds = time.perf_counter() - started
        started = time.perf_counter()
        updated = Fermi(**common, **paper, update_iterations=args.update_iterations).compile(
            OpinionQA(), trainset=first + more, profile=record.profile, init=previous)
        update_seconds = time.perf_counter() - started

        def calls(program: Any) -> dict[str, int]:
            result = program.detailed_results
            return {"task": result.task_usage.calls, "proposer": result.proposer_usage.calls}

        row = {"user_id": record.user_id, "first": {**calls(previous), "seconds": first_seconds},
               "fresh": {**calls(fresh), "seconds": fresh_seconds, "accuracy": accuracy(fresh),
                         "stop_reason": fresh.detailed_results.stop_reason},
               "update": {**calls(updated), "seconds": update_seconds, "accuracy": accuracy(updated),
                          "rescored_calls": updated.detailed_results.rescored_calls},
               "first_accuracy": accuracy(previous), "git_commit": commit,
               "cold_cache": os.environ.get("DSPY_CACHEDIR")}
        rows.append(row)
        save()
        print(json.dumps(row), flush=True)

    save()
    if rows:
        print_summary(summarize(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
