"""Scripted LMs for offline tests of programs that use Fermi (and of Fermi itself).

`rule_lm(respond)` returns a real `dspy.LM` whose engine calls `respond(system, user)` and formats the returned
output fields the way DSPy's adapters expect. Because `system` holds the instruction under test, answers can
depend on the prompt, so a better prompt can measurably score better. Every request is recorded.
"""

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage

Respond = Callable[[str, str], dict[str, Any]]
"""`respond(system_text, user_text) -> {output_field: value}`."""


@dataclass(frozen=True)
class RecordedCall:
    """One request an engine received: the system text, the conversation text and the request's settings."""

    system: str
    user: str
    temperature: float | None
    max_tokens: int | None

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
    """A DSPy engine answering with a Python function; thread-safe; records every request in `calls`."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.calls: list[RecordedCall] = []
        self._lock = threading.Lock()

    def complete(self, request: Any) -> Response:
        system = request.system if isinstance(request.system, str) else "".join(
            getattr(p, "text", "") or "" for p in (request.system or ())
        )
        user = "\n".join(m.text or "" for m in request.messages)
        config = request.config
        with self._lock:
            self.calls.append(RecordedCall(system, user, getattr(config, "temperature", None),
                                           getattr(config, "max_tokens", None)))
        fields = self.respond(system, user)
        if wants_json(request, system):
            text = json.dumps(fields)
        else:
            text = format_chat_fields(fields)
        usage = Usage(input_tokens=len(system + user) // 4, output_tokens=len(text) // 4,
                      total_tokens=(len(system + user) + len(text)) // 4)
        return Response(id=None, model=request.model, message=Message.assistant([TextPart(text)]),
                        finish_reason="stop", usage=usage)

    def stream(self, request: Any) -> Any:
        raise NotImplementedError("RuleEngine does not stream.")

    def close(self) -> None:
        pass


def rule_lm(respond: Respond, *, model: str = "rule/lm", **kwargs: Any) -> dspy.LM:
    """A `dspy.LM` (uncached) that answers with `respond(system, user)`; its engine is `lm.engine`.

    Args:
        respond: Returns the output fields for a request.
        model: The model name (give task and proposer LMs different names to tell them apart in usage).
        **kwargs: More `dspy.LM` settings (temperature, max_tokens, ...).
    """
    return dspy.LM(model, engine=RuleEngine(respond), cache=False, **kwargs)
