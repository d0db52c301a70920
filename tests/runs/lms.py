"""Scripted LMs and SYNTHETIC users for the run tests (not real data).

The LMs follow the tests' topic rules (`tests.scripted`). Every question names its user ("[u3] Do you support
guns?"), so each LM call can be attributed to a user. Answers depend only on the request and its seed (no counters),
so a user's results do not depend on which other users run at the same time, in which process, or in which order.

The factories are used as LM specs, e.g. "factory:tests.runs.lms:task_lm", so subprocess and Ray workers build them
too. Knobs, read from the environment (so they reach subprocesses and Ray workers):

* FERMI_TEST_LM_DELAY: seconds every call sleeps (to kill a subprocess mid-run);
* FERMI_TEST_CALL_LOG: a file every call appends "<role> <user tag>" to (to count calls across processes).
"""

import hashlib
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dspy

from fermi_dspy.testing import RecordedCall, RuleEngine
from tests.scripted import QUESTION, proposal, task_respond

TOPICS = ("guns", "taxes", "unions", "nukes", "zoos", "polls", "bikes", "trains", "farms", "parks", "ports", "mines")

_LOCK = threading.Lock()
#: (role, user tag) of every call made in this process.
CALLS: list[tuple[str, str]] = []
#: Raise `SimulatedCrash` on the call that makes this process's call count reach this number (None: never).
CRASH_AT: dict[str, int | None] = {"call": None}


class SimulatedCrash(BaseException):
    """A crash in the middle of a run (propagates like a KeyboardInterrupt)."""


def reset() -> None:
    """Forget recorded calls and disarm the crash."""
    with _LOCK:
        CALLS.clear()
        CRASH_AT["call"] = None


def calls_by_user(role: str | None = None) -> Counter[str]:
    """Calls recorded in this process, per user tag."""
    with _LOCK:
        return Counter(tag for r, tag in CALLS if role is None or r == role)


def _digest(*parts: Any) -> int:
    return int(hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:8], 16)


class ScriptedEngine(RuleEngine):
    """The topic rules as a thread-safe engine that takes a per-call seed, like the local llama.cpp engine.

    Args:
        role: "task" or "proposer".
        garbled: Reply with text no adapter can parse (so DSPy falls back to its JSONAdapter: more calls).
    """

    supported_params = frozenset({"temperature", "max_tokens", "seed", "response_format", "stop", "top_p", "logprobs",
                                  "top_logprobs"})

    def __init__(self, role: str, *, garbled: bool = False) -> None:
        super().__init__(task_respond)
        self.role = role
        self.garbled = garbled

    def answer(self, call: RecordedCall) -> dict[str, Any]:
        match = QUESTION.search(call.user)
        tag = (match.group(1) or "?") if match else "?"
        with _LOCK:
            CALLS.append((self.role, tag))
            count = len(CALLS)
            crash = CRASH_AT["call"] is not None and count >= CRASH_AT["call"]
        log = os.environ.get("FERMI_TEST_CALL_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(f"{self.role} {tag}\n")
        if crash:
            raise SimulatedCrash(f"simulated crash at call {count}")
        delay = float(os.environ.get("FERMI_TEST_LM_DELAY", "0") or 0)
        if delay:
            time.sleep(delay)
        if self.garbled:
            return {}
        return task_respond(call.system, call.user) if self.role == "task" else proposal(
            call.user, _digest(call.user, call.seed) % 1000)

    def complete(self, request: Any) -> Any:
        response = super().complete(request)
        if not self.garbled:
            return response
        from dspy.lm15 import Message, Response, TextPart

        return Response(id=None, model=request.model, message=Message.assistant([TextPart("I would rather not say.")]),
                        finish_reason="stop", usage=response.usage)


def task_lm(role: str = "task") -> dspy.LM:
    """The scripted task LM (spec "factory:tests.runs.lms:task_lm")."""
    return dspy.LM("rule/task", engine=ScriptedEngine("task"), cache=False, temperature=0.0, num_retries=0)


def proposer_lm(role: str = "proposer") -> dspy.LM:
    """The scripted proposer LM (spec "factory:tests.runs.lms:proposer_lm")."""
    return dspy.LM("rule/proposer", engine=ScriptedEngine("proposer"), cache=False, temperature=1.0, num_retries=0)


def garbled_task_lm(role: str = "task") -> dspy.LM:
    """A task LM whose replies never parse (spec "factory:tests.runs.lms:garbled_task_lm")."""
    return dspy.LM("rule/garbled", engine=ScriptedEngine("task", garbled=True), cache=False, temperature=0.0,
                   num_retries=0)


TASK = "factory:tests.runs.lms:task_lm"
GARBLED_TASK = "factory:tests.runs.lms:garbled_task_lm"
PROPOSER = "factory:tests.runs.lms:proposer_lm"


def supported_topics(number: int) -> set[str]:
    """The topics SYNTHETIC user `number` supports (a deterministic mix)."""
    return {t for t in TOPICS if _digest(number, t) % 3 == 0}


def hwang_row(number: int, n_answers: int = 10) -> dict[str, Any]:
    """A SYNTHETIC record in the Hwang et al. file format; its user id is "synthetic-<number>"."""
    supported = supported_topics(number)
    return {
        "hwang_user_id": number,
        "topic": "Synthetic",
        "profile_partial": {"Political party": "Independent" if number % 2 else "Democrat"},
        "answers": [
            {"qid": f"Q{t.upper()}", "question": f"[u{number}] Do you support {t}?", "options": ["Yes", "No"],
             "answer": "Yes" if t in supported else "No"}
            for t in TOPICS[:n_answers]
        ],
    }


def write_users_file(path: Path, count: int, *, n_answers: int = 10, extra_lines: tuple[str, ...] = ()) -> Path:
    """Write `count` SYNTHETIC users in the Hwang format (plus verbatim `extra_lines`) and return the path."""
    lines = [json.dumps(hwang_row(n, n_answers)) for n in range(1, count + 1)]
    path.write_text("\n".join([*lines, *extra_lines]) + "\n")
    return path


#: Small Fermi settings that finish in a fraction of a second per user with the scripted LMs.
FERMI = {"num_iterations": 2, "num_candidates": 2, "retrieval_fields": ["question"]}
SPLIT = {"n_train": 6, "n_test": 4}
