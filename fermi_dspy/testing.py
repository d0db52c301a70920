"""Scripted LMs for offline tests of programs that use Fermi (and of Fermi itself).

`rule_lm(respond)` returns a real `dspy.LM` whose engine calls `respond(system, user)` and formats the returned
output fields the way DSPy's adapters expect. Because `system` holds the instruction under test, answers can
depend on the prompt, so a better prompt can measurably score better. Every request is recorded. A `RuleEngine`
subclass can answer from the whole request instead (`answer(call)`, with its seed and settings) and declare the
request parameters it takes (`supported_params`).

`instant_lm(role)` is a ready LM for any signature, for dry runs of whole pipelines (the benchmark's `--scripted`,
overhead measurements): the task LM picks an option from a hash of its instruction and the question, so different
prompts give different, deterministic answers; the proposer fills every output field with a text never produced
before. As an LM spec it is "factory:fermi_dspy.testing:instant_lm", so workers in other processes build it too.

For students that answer multiple-choice questions by letter (`fermi_dspy.programs.OpinionQA`), `respond` may
answer with the option's text: when the request shows lettered options ("A. Yes") and asks for one of their
letters, the engine replies with the letter of the option named. A `respond` may also return
`{"answer": ..., LOGPROBS: {"A": -0.2, "B": -1.7}}`; the reply then carries those log-probabilities (when the request
asks for log-probabilities), as a real LM's would.
"""

import hashlib
import itertools
import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.lm15 import Message, Response, TextPart, TokenLogprob, TopLogprob, Usage

from fermi_dspy.lm.grammar import chat_adapter_fields, literal_choices
from fermi_dspy.metrics import normalize_answer

#: The key of a `respond` result holding log-probabilities for the reply's answer (token -> logprob).
LOGPROBS = "_logprobs"

_OPTION_LINE = re.compile(r"^([A-Z])\. (.*)$", re.MULTILINE)

Respond = Callable[[str, str], dict[str, Any]]
"""`respond(system_text, user_text) -> {output_field: value}`."""


@dataclass(frozen=True)
class RecordedCall:
    """One request an engine received: the system text, the conversation text and the request's settings."""

    system: str
    user: str
    temperature: float | None
    max_tokens: int | None
    seed: int | None = None

    @property
    def text(self) -> str:
        return f"{self.system}\n{self.user}"


def format_chat_fields(fields: dict[str, Any]) -> str:
    """Output fields in DSPy's ChatAdapter format."""
    parts = [f"[[ ## {name} ## ]]\n{value}" for name, value in fields.items()]
    return "\n\n".join([*parts, "[[ ## completed ## ]]"])


def wants_json(request: Any, system: str) -> bool:
    """Whether DSPy's JSONAdapter (rather than the ChatAdapter) made this request."""
    return bool(getattr(request.config, "response_format", None)) or "[[ ## completed ## ]]" not in system


class RuleEngine:
    """A DSPy engine answering with a Python function; thread-safe; records every request in `calls`.

    Attributes:
        supported_params: Request parameters the engine declares it takes (DSPy then sends them: e.g. "seed",
            "response_format"); none by default.
    """

    supported_params: frozenset[str] = frozenset()

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.calls: list[RecordedCall] = []
        self._lock = threading.Lock()

    def answer(self, call: RecordedCall) -> dict[str, Any]:
        """The output fields for one request (default: `respond(system, user)`)."""
        return self.respond(call.system, call.user)

    def complete(self, request: Any) -> Response:
        system = request.system if isinstance(request.system, str) else "".join(
            getattr(p, "text", "") or "" for p in (request.system or ())
        )
        user = "\n".join(m.text or "" for m in request.messages)
        config = request.config
        call = RecordedCall(system, user, getattr(config, "temperature", None), getattr(config, "max_tokens", None),
                            getattr(config, "seed", None))
        with self._lock:
            self.calls.append(call)
        fields = dict(self.answer(call))
        scripted_logprobs = fields.pop(LOGPROBS, None)
        fields = as_letters(fields, request.messages[-1].text or "")
        if wants_json(request, system):
            text = json.dumps(fields)
        else:
            text = format_chat_fields(fields)
        usage = Usage(input_tokens=len(system + user) // 4, output_tokens=len(text) // 4,
                      total_tokens=(len(system + user) + len(text)) // 4)
        logprobs = None
        if scripted_logprobs and config.logprobs is not None and fields:
            chosen = str(next(iter(fields.values())))
            top = tuple(TopLogprob(token=t, logprob=float(lp)) for t, lp in
                        sorted(scripted_logprobs.items(), key=lambda item: -item[1]))
            logprobs = (TokenLogprob(token=chosen, logprob=float(scripted_logprobs.get(chosen, -math.inf)), top=top),)
        return Response(id=None, model=request.model, message=Message.assistant([TextPart(text)]),
                        finish_reason="stop", usage=usage, logprobs=logprobs)

    def stream(self, request: Any) -> Any:
        raise NotImplementedError("RuleEngine does not stream.")

    def close(self) -> None:
        pass


def shown_options(user: str) -> list[str]:
    """The options a request shows in its `[[ ## options ## ]]` field: lettered lines ("A. Yes") or a JSON list."""
    match = re.search(r"\[\[ ## options ## \]\]\n(.*?)(?:\n\n|$)", user, re.S)
    if not match:
        return []
    lettered = [text for _, text in _OPTION_LINE.findall(match.group(1))]
    if lettered:
        return lettered
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def as_letters(fields: dict[str, Any], last_message: str) -> dict[str, Any]:
    """Replace an option's text by its letter where the request's last message shows lettered options and asks for
    one of their letters (as `fermi_dspy.programs.OpinionQA` does)."""
    asked = chat_adapter_fields(last_message) or []
    letters = {f.name: literal_choices(f.type_name or "") for f in asked}
    options = {normalize_answer(text): letter for letter, text in _OPTION_LINE.findall(last_message)}
    out = dict(fields)
    for name, value in fields.items():
        allowed = letters.get(name, tuple(options.values()))  # JSONAdapter requests name no type in the message
        if allowed and str(value) not in allowed and normalize_answer(value) in options:
            out[name] = options[normalize_answer(value)]
    return out


class AsyncRuleEngine:
    """The async counterpart of a `RuleEngine` (for `acall`), answering through it."""

    def __init__(self, engine: RuleEngine) -> None:
        self.engine = engine

    async def complete(self, request: Any) -> Response:
        return self.engine.complete(request)

    def stream(self, request: Any) -> Any:
        raise NotImplementedError("RuleEngine does not stream.")

    async def aclose(self) -> None:
        pass


def rule_lm(respond: Respond | RuleEngine, *, model: str = "rule/lm", **kwargs: Any) -> dspy.LM:
    """A `dspy.LM` (uncached, sync and async) that answers with `respond(system, user)`; its engine is `lm.engine`.

    Args:
        respond: Returns the output fields for a request; or a ready `RuleEngine`.
        model: The model name (give task and proposer LMs different names to tell them apart in usage).
        **kwargs: More `dspy.LM` settings (temperature, max_tokens, num_retries, ...).
    """
    engine = respond if isinstance(respond, RuleEngine) else RuleEngine(respond)
    return dspy.LM(model, engine=engine, async_engine=AsyncRuleEngine(engine), cache=False, **kwargs)


# -- instant LMs for any signature --------------------------------------------------------------------------------

_OUTPUTS = re.compile(r"Your output fields are:\n(.*?)\n(?:All interactions|In adhering)", re.S)
_FIELD = re.compile(r"^\d+\. `(\w+)` \(([^)]*)\)", re.M)
_QUESTION = re.compile(r"\[\[ ## question ## \]\]\n(.*?)(?:\n\n|$)", re.S)
#: A per-call choice as DSPy's adapters state it in the request: "`[[ ## rating ## ]]` (must be formatted as a valid
#: Python Literal['1', '2'])" (ChatAdapter) or "`rating` (must be formatted as a valid Python Literal[...])" (JSON).
_STATED_CHOICES = re.compile(
    r"`(?:\[\[ ## )?(\w+)(?: ## \]\])?` \(must be formatted as a valid Python (Literal\[[^\]]*\])\)")


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
    return {"bool": False, "int": 0, "float": 0}.get(kind)


def hashed_choice(system: str, question: str, options: list[str]) -> str:
    """A deterministic option that depends on the instruction and the question."""
    digest = hashlib.sha256(f"{system}\x1f{question}".encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def stated_choices(user: str) -> dict[str, list[str]]:
    """The choices the request's last message allows per output field (a per-call `Literal`), by field name."""
    found: dict[str, list[str]] = {}
    for name, type_name in _STATED_CHOICES.findall(user):
        choices = literal_choices(type_name)
        if choices:
            found[name] = choices
    return found


def answer_any(system: str, user: str) -> dict[str, Any]:
    """Answer the last query shown with `hashed_choice` among its options, or among the choices the request allows
    for a field that shows no options (a star rating); fill other fields with empty values.

    The choice depends on the instruction and the last `question` (or, without one, the last query's fields: a movie).
    """
    options = shown_options(user.rsplit("[[ ## question ## ]]", 1)[-1]) or shown_options(user)
    questions = _QUESTION.findall(user)
    before, _, request = user.rpartition("Respond with")
    query = questions[-1] if questions else before.rsplit("[[ ## completed ## ]]", 1)[-1]
    allowed = stated_choices(request)
    reply: dict[str, Any] = {}
    for name, kind in output_fields(system) or [("answer", "str")]:
        empty = _empty_value(kind)
        if empty is not None:
            reply[name] = empty
        elif options:
            reply[name] = hashed_choice(system, query, options)
        elif name in allowed:
            reply[name] = hashed_choice(system, query, allowed[name])
        else:
            reply[name] = "A"
    return reply


class NewTexts:
    """A `respond` that fills every string output field with a text never produced before (proposals never repeat)."""

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


_INSTANT: dict[str, RuleEngine] = {}
_INSTANT_LOCK = threading.Lock()


def instant_engine(role: str = "task") -> RuleEngine:
    """The process's engine behind every `instant_lm(role)`; its `calls` record each of their requests."""
    with _INSTANT_LOCK:
        if role not in _INSTANT:
            _INSTANT[role] = RuleEngine(answer_any if role == "task" else NewTexts())
        return _INSTANT[role]


def instant_lm(role: str = "task", **kwargs: Any) -> dspy.LM:
    """An instant scripted LM for any signature (model `scripted/<role>`): the task LM ("task", also for "test")
    answers by `answer_any`, any other role writes `NewTexts`. Spec: "factory:fermi_dspy.testing:instant_lm"."""
    role = "task" if role in ("task", "test") else "proposer"
    return rule_lm(instant_engine(role), model=f"scripted/{role}", **kwargs)
