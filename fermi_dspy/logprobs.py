"""Read a choice's probabilities out of the token log-probabilities an LM returned with its reply.

DSPy puts them on the prediction as `prediction.logprobs` when the LM is called with `logprobs=True` (and
`top_logprobs=N`): `{"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}, ...]}, ...]}` for the
tokens of the reply. The local engine returns only the answer's position (the reply's header is part of its prompt);
OpenAI-compatible servers return every token of the reply, so the answer's position is found after the field's
marker (`[[ ## answer ## ]]` for DSPy's ChatAdapter, `"answer":` for its JSONAdapter).
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _entries(logprobs: Any) -> list[Mapping[str, Any]]:
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else getattr(logprobs, "content", None)
    return list(content or [])


def _text(entry: Mapping[str, Any]) -> str:
    return str(entry.get("token") or "")


def _value_start(text: str, field: str) -> int:
    """Where the field's value starts in the reply text (0 when the reply holds only the value)."""
    for marker in (f"[[ ## {field} ## ]]", f'"{field}"'):
        at = text.find(marker)
        if at >= 0:
            at += len(marker)
            while at < len(text) and text[at] in ' \t\r\n:"':
                at += 1
            return at
    at = 0
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def choice_probabilities(logprobs: Any, choices: Sequence[str], *, field: str = "answer") -> list[float] | None:
    """The model's probability of each choice at the position where the field's value starts.

    Args:
        logprobs: `prediction.logprobs` as DSPy returns it (a dict with "content"), or None.
        choices: The allowed values, each expected to be one token (e.g. option letters "A", "B", ...).
        field: The output field whose value is the choice.

    Returns:
        One probability per choice (not renormalized; a choice missing from the top log-probabilities gets 0.0), or
        None when there are no log-probabilities to read.
    """
    entries = _entries(logprobs)
    if not entries:
        return None
    text = "".join(_text(e) for e in entries)
    start = _value_start(text, field)
    position, offset = None, 0
    for index, entry in enumerate(entries):
        end = offset + len(_text(entry))
        if end > start and _text(entry).strip():
            position = index
            break
        offset = end
    if position is None:
        return None
    entry = entries[position]
    best: dict[str, float] = {}
    candidates = [entry, *list(entry.get("top_logprobs") or [])]
    for candidate in candidates:
        token = _text(candidate).strip()
        if token in choices and candidate.get("logprob") is not None:
            best[token] = max(best.get(token, -math.inf), float(candidate["logprob"]))
    return [math.exp(best[c]) if c in best else 0.0 for c in choices]
