"""Benchmark the local LM routes: seconds per call, calls per second and parse rate on a survey task.

For each model and route it runs ``dspy.Predict`` with the signature ``question, options -> answer`` on real
OpinionQA questions of one user, with a ~400-token Fermi-style prompt (profile plus a few of the user's known
answers). DSPy's response cache is off; the model is loaded and warmed up before timing.

Columns:
    s/call     wall seconds per LM call (load excluded)
    calls/s    LM calls per second
    parsed     predictions that parsed (DSPy's ChatAdapter may retry once with JSONAdapter on a parse failure)
    1st try    predictions that parsed on the first LM call
    valid      answers that name one of the options, read as the metric reads them (`fermi_dspy.option_index`)
    agree      answers that match the user's own answer (zero-shot accuracy with the profile prompt)
    load       1-minute load average after the row (above ~2.5 on 2 cores means another process competed)

Run from the repository root:
    python -m programs.bench_lm_speed                       # all models, both routes, N=20
    python -m programs.bench_lm_speed --models smollm2-135m --routes inprocess -n 5
"""

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
from dspy.utils.callback import BaseCallback

from fermi_dspy.lm.llama_engine import LlamaCppEngine
from fermi_dspy.lm.models import MODELS, ensure_model
from fermi_dspy.lm.server import LlamaServer, server_lm
from fermi_dspy.metrics import option_index

USERS = Path("/work/shared/data/opinionqa/alphaedit_users/users.jsonl")


class Survey(dspy.Signature):
    """Answer the survey question."""

    question: str = dspy.InputField()
    options: list[str] = dspy.InputField(desc="the answer options, each starting with its letter")
    answer: str = dspy.OutputField(desc="the letter of the chosen option")


class CallCounter(BaseCallback):
    """Counts LM calls (propagates into DSPy's adapter fallback)."""

    def __init__(self) -> None:
        self.calls = 0

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.calls += 1


@dataclass
class Row:
    route: str
    model: str
    adapter: str
    prefix_cache: str
    n: int
    lm_calls: int
    seconds: float
    parsed: int
    first_try: int
    valid: int
    agree: int
    prompt_tokens: int
    load: float = 0.0

    @property
    def s_per_call(self) -> float:
        return self.seconds / max(self.lm_calls, 1)


def load_user(path: Path, index: int) -> dict[str, Any]:
    with open(path) as f:
        for i, line in enumerate(f):
            if i == index:
                return json.loads(line)
    raise SystemExit(f"{path} has no user #{index}")


def instruction_for(user: dict[str, Any], n_known: int) -> str:
    """A Fermi-style personalized instruction: the profile and a few of the user's own earlier answers."""
    profile = "; ".join(f"{k}: {v}" for k, v in user["profile"].items())
    known = user["answers"][-n_known:]
    lines = "\n".join(f"- {a['question']} -> {a['answer']}" for a in known)
    return (
        "You are answering an opinion survey on behalf of one specific person. Answer exactly as this person "
        f"would, not as an assistant.\nProfile: {profile}.\nSome of this person's earlier answers:\n{lines}\n"
        "Choose exactly one of the given options and reply with its letter only."
    )


def run(lm: Any, adapter: dspy.Adapter, questions: list[dict[str, Any]], instruction: str) -> dict[str, Any]:
    predict = dspy.Predict(Survey.with_instructions(instruction))
    counter = CallCounter()
    parsed = first_try = valid = agree = 0
    # One warm-up call: loads the model / fills the prefix cache like a steady-state run.
    warm = questions[0]
    with dspy.context(lm=lm, adapter=adapter):
        try:
            predict(question=warm["question"], options=warm["opts"])
        except Exception:
            pass
    start = time.perf_counter()
    with dspy.context(lm=lm, adapter=adapter, callbacks=[counter]):
        for q in questions:
            before = counter.calls
            try:
                pred = predict(question=q["question"], options=q["opts"])
            except Exception as exc:
                logging.debug("parse failure: %s", exc)
                continue
            parsed += 1
            first_try += counter.calls - before == 1
            chosen = option_index(pred.answer, q["options"])  # the metric's reading: letter, text or ["text"]
            valid += chosen is not None
            agree += chosen is not None and chosen == q["answer_index"]
    seconds = time.perf_counter() - start
    usage = lm.history[-1]["usage"] if lm.history else {}
    return {"lm_calls": counter.calls, "seconds": seconds, "parsed": parsed, "first_try": first_try, "valid": valid,
            "agree": agree, "prompt_tokens": int(usage.get("prompt_tokens") or 0), "load": os.getloadavg()[0]}


ADAPTERS = ("ChatAdapter", "JSONAdapter")


def make_adapters(names: list[str]) -> dict[str, dspy.Adapter]:
    made = {"ChatAdapter": dspy.ChatAdapter(), "JSONAdapter": dspy.JSONAdapter()}
    return {name: made[name] for name in names}


@dataclass
class Setup:
    questions: list[dict[str, Any]]
    instruction: str
    max_tokens: int
    adapters: list[str]
    prefix_cache: list[bool]
    threads: int


def bench_inprocess(model: str, setup: Setup) -> list[Row]:
    rows = []
    path = ensure_model(model)
    for prefix_cache in setup.prefix_cache:
        engine = LlamaCppEngine(path, prefix_cache=prefix_cache, n_threads=setup.threads).load()
        lm = dspy.LM(f"local/{model}", engine=engine, cache=False, temperature=0.0, max_tokens=setup.max_tokens,
                     num_retries=0)
        for name, adapter in make_adapters(setup.adapters).items():
            result = run(lm, adapter, setup.questions, setup.instruction)
            rows.append(Row("inprocess", model, name, "on" if prefix_cache else "off", len(setup.questions), **result))
            print_row(rows[-1])
        engine.close()
    return rows


def bench_server(model: str, setup: Setup) -> list[Row]:
    rows = []
    with LlamaServer(ensure_model(model), alias=model, n_threads=setup.threads) as server:
        lm = server_lm(server, max_tokens=setup.max_tokens, temperature=0.0, cache=False, num_retries=0)
        for name, adapter in make_adapters(setup.adapters).items():
            result = run(lm, adapter, setup.questions, setup.instruction)
            rows.append(Row("server", model, name, "on (server)", len(setup.questions), **result))
            print_row(rows[-1])
    return rows


HEADER = (f"{'route':10} {'model':20} {'adapter':12} {'prefix':11} {'s/call':>7} {'calls/s':>8} {'parsed':>7} "
          f"{'1st try':>8} {'valid':>6} {'agree':>6} {'calls':>6} {'prompt tok':>10} {'load':>5}")


def print_row(r: Row) -> None:
    print(f"{r.route:10} {r.model:20} {r.adapter:12} {r.prefix_cache:11} {r.s_per_call:7.2f} "
          f"{r.lm_calls / r.seconds:8.2f} {r.parsed:>3}/{r.n:<3} {r.first_try:>4}/{r.n:<3} {r.valid:>2}/{r.n:<3} "
          f"{r.agree:>2}/{r.n:<3} "
          f"{r.lm_calls:6d} {r.prompt_tokens:10d} {r.load:5.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"],
                        choices=list(MODELS))
    parser.add_argument("--routes", nargs="+", default=["inprocess", "server"], choices=["inprocess", "server"])
    parser.add_argument("--adapters", nargs="+", default=list(ADAPTERS), choices=ADAPTERS)
    parser.add_argument("--prefix-cache", nargs="+", default=["on", "off"], choices=["on", "off"],
                        help="in-process prefix-cache settings to run")
    parser.add_argument("-n", type=int, default=20, help="questions per configuration")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--user", type=int, default=0, help="user index in users.jsonl")
    parser.add_argument("--users-file", type=Path, default=USERS)
    parser.add_argument("--known", type=int, default=3, help="earlier answers shown in the prompt")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    user = load_user(args.users_file, args.user)
    questions = [
        {"question": a["question"], "opts": [f"{chr(65 + i)}. {o}" for i, o in enumerate(a["options"])],
         "options": a["options"],
         "answer_index": a["options"].index(a["answer"]) if a["answer"] in a["options"] else -1}
        for a in user["answers"][: args.n]
    ]
    instruction = instruction_for(user, args.known)
    setup = Setup(questions, instruction, args.max_tokens, args.adapters, [p == "on" for p in args.prefix_cache],
                  args.threads)
    print(f"{len(questions)} questions of user {user['user_id']}, max_tokens={args.max_tokens}, temperature=0, "
          f"n_threads={args.threads}")
    if os.getloadavg()[0] > 0.7:
        print(f"WARNING: load average {os.getloadavg()[0]:.1f}: other processes are using the CPU; timings will be "
              "slow (oversubscribed llama.cpp threads spin)")
    print(HEADER)
    rows: list[Row] = []
    for model in args.models:
        if "inprocess" in args.routes:
            rows += bench_inprocess(model, setup)
        if "server" in args.routes:
            rows += bench_server(model, setup)
    print("\n" + HEADER)
    for row in rows:
        print_row(row)
    if args.out:
        args.out.write_text(json.dumps([{**asdict(r), "s_per_call": r.s_per_call} for r in rows], indent=2))


if __name__ == "__main__":
    main()
