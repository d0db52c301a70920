"""Instant scripted LMs that answer any DSPy signature: for the smoke test, the overhead measurement and dry runs.

The task LM picks an option from a hash of its instruction and the question, so different prompts give different
(deterministic) answers and optimizers have something to find. The proposer LM fills every output field with a new
text on each call, so proposals never repeat. Both are engine-backed `dspy.LM`s (`fermi_dspy.testing.rule_lm`) that
record every request in `lm.engine.calls`.
"""

import hashlib
import itertools
import json
import re
import threading
from typing import Any

import dspy

from fermi_dspy.testing import rule_lm

_OUTPUTS = re.compile(r"Your output fields are:\n(.*?)\n(?:All interactions|In adhering)", re.S)
_FIELD = re.compile(r"^\d+\. `(\w+)` \(([^)]*)\)", re.M)
_OPTIONS = re.compile(r"\[\[ ## options ## \]\]\n(.*?)(?:\n\n|$)", re.S)
_QUESTION = re.compile(r"\[\[ ## question ## \]\]\n(.*?)(?:\n\n|$)", re.S)


def output_fields(system: str) -> list[tuple[str, str]]:
    """(name, type) of the output fields a DSPy adapter asks for in its system message."""
    match = _OUTPUTS.search(system)
    return _FIELD.findall(match.group(1)) if match else []


def _empty_value(kind: str) -> Any:
    kind = kind.lower()
    if kind.startswith(("list", "tuple")):
        return []
    if kind.startswith("dict"):
        return {}
    if kind == "bool":
        return False
    if kind in ("int", "float"):
        return 0
    return None


def hashed_choice(system: str, question: str, options: list[str]) -> str:
    """A deterministic option that depends on the instruction and the question."""
    digest = hashlib.sha256(f"{system}\x1f{question}".encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def task_respond(system: str, user: str) -> dict[str, Any]:
    """Answer the last question in the conversation with `hashed_choice`; fill other fields with empty values."""
    options_blocks = _OPTIONS.findall(user)
    question_blocks = _QUESTION.findall(user)
    try:
        options = json.loads(options_blocks[-1]) if options_blocks else []
    except json.JSONDecodeError:
        options = []
    fields = output_fields(system) or [("answer", "str")]
    reply: dict[str, Any] = {}
    for name, kind in fields:
        empty = _empty_value(kind)
        if empty is not None:
            reply[name] = empty
        elif options:
            reply[name] = hashed_choice(system, question_blocks[-1] if question_blocks else "", options)
        else:
            reply[name] = "A"
    return reply


class ProposerRespond:
    """Fill every string output field with a text never produced before (so proposals never repeat)."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def __call__(self, system: str, user: str) -> dict[str, Any]:
        with self._lock:
            number = next(self._counter)
        reply: dict[str, Any] = {}
        for name, kind in output_fields(system) or [("new_prompt", "str")]:
            empty = _empty_value(kind)
            reply[name] = empty if empty is not None else f"Answer as this person would. (variant {number}, {name})"
        return reply


def scripted_task_lm(**kwargs: Any) -> dspy.LM:
    """The instant scripted task LM (model name `scripted/task`)."""
    return rule_lm(task_respond, model="scripted/task", **kwargs)


def scripted_proposer_lm(**kwargs: Any) -> dspy.LM:
    """The instant scripted proposer LM (model name `scripted/proposer`)."""
    return rule_lm(ProposerRespond(), model="scripted/proposer", **kwargs)
