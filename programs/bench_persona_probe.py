"""Does a model's answer distribution move with the persona? A probe over real users, reading option probabilities.

    python -m programs.bench_persona_probe --model qwen2.5-coder-0.5b --data hwang --users 6 --questions 20
    python -m programs.bench_persona_probe --model qwen2.5-coder-1.5b --model smollm2-135m

For each user and each of their questions, the OpinionQA student answers twice with the embedded model: once with
the persona in its instruction (the profile-in-prompt prompt, Fermi's first candidate) and once without. Answers are
constrained to the option letters, and the engine returns every option's probability from the same forward pass.
Reported per model, averaged over the questions:

* total variation between the two answer distributions (0: the persona changes nothing);
* how often the top answer changes;
* the probability the model gives the person's own answer, with and without the persona (does it move toward them);
* top-answer accuracy with and without the persona, and the LM-free floor (the user's most chosen option position in
  their other answers).

Cold by default (a fresh DSPy cache in a new process). Results go to `--out` as JSON.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from programs.cold import rerun_cold


def normalized(probabilities: list[float]) -> list[float]:
    total = sum(probabilities)
    return [p / total for p in probabilities] if total > 0 else [1.0 / len(probabilities)] * len(probabilities)


def probe_model(model: str, users: list[Any], questions: int) -> dict[str, Any]:
    import dspy

    from fermi_dspy import initial_prompt, option_index, with_prompt
    from fermi_dspy.lm import local_lm
    from fermi_dspy.programs import OpinionQA
    from programs.floor import favourite_position, position_counts

    lm = local_lm(model, cache=True, temperature=0.0).copy(logprobs=True, top_logprobs=26)
    rows = []
    started = time.perf_counter()
    for user in users:
        examples = list(user.examples)
        probe, rest = examples[:questions], examples[questions:]
        plain = OpinionQA()
        persona = with_prompt(plain, initial_prompt(user.profile))
        counts = position_counts(rest)
        with dspy.context(lm=lm):
            for program_name, program in (("neutral", plain), ("persona", persona)):
                for example in probe:
                    prediction = program(**example.inputs())
                    rows.append({"user": user.user_id, "question": example.question, "condition": program_name,
                                 "probs": normalized(prediction.option_probs or [1.0] * len(example.options)),
                                 "answer": option_index(example.answer, example.options),
                                 "floor": favourite_position(counts, len(example.options))})
    seconds = time.perf_counter() - started
    paired: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        paired.setdefault((row["user"], row["question"]), {})[row["condition"]] = row
    tv, flips, p_with, p_without, acc_with, acc_without, floor = [], [], [], [], [], [], []
    for pair in paired.values():
        a, b = pair["neutral"], pair["persona"]
        tv.append(0.5 * sum(abs(x - y) for x, y in zip(a["probs"], b["probs"], strict=True)))
        top_a, top_b = a["probs"].index(max(a["probs"])), b["probs"].index(max(b["probs"]))
        flips.append(top_a != top_b)
        p_without.append(a["probs"][a["answer"]])
        p_with.append(b["probs"][b["answer"]])
        acc_without.append(top_a == a["answer"])
        acc_with.append(top_b == b["answer"])
        floor.append(a["floor"] == a["answer"])
    mean = statistics.fmean
    return {
        "model": model, "users": len(users), "questions": len(paired), "calls": len(rows),
        "seconds_per_call": seconds / max(1, len(rows)),
        "total_variation": mean(tv), "top_answer_changed": mean(flips),
        "p_person_answer_with_persona": mean(p_with), "p_person_answer_without_persona": mean(p_without),
        "argmax_accuracy_with_persona": mean(acc_with), "argmax_accuracy_without_persona": mean(acc_without),
        "floor_accuracy": mean(floor),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=None, help="embedded model (repeatable)")
    parser.add_argument("--data", default="hwang")
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/persona-probe.json")
    args = parser.parse_args(argv)
    rerun_cold("programs.bench_persona_probe")
    from fermi_dspy.data import load_users

    users = load_users(args.data, on_bad_record="skip", null_answers="skip", min_examples=args.questions + 5,
                       limit=args.users).records
    results = [probe_model(model, users, args.questions) for model in (args.model or ["qwen2.5-coder-0.5b"])]
    header = (f"{'model':<22} {'TV':>6} {'top changed':>11} {'p(own) +persona':>15} {'p(own) -persona':>15} "
              f"{'acc +persona':>12} {'acc -persona':>12} {'floor':>6} {'s/call':>7}")
    print(header)
    for r in results:
        print(f"{r['model']:<22} {r['total_variation']:>6.3f} {r['top_answer_changed']:>11.2f} "
              f"{r['p_person_answer_with_persona']:>15.3f} {r['p_person_answer_without_persona']:>15.3f} "
              f"{r['argmax_accuracy_with_persona']:>12.3f} {r['argmax_accuracy_without_persona']:>12.3f} "
              f"{r['floor_accuracy']:>6.3f} {r['seconds_per_call']:>7.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"data": args.data, "users": [u.user_id for u in users], "questions": args.questions,
                               "cold_cache": os.environ.get("DSPY_CACHEDIR"), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
