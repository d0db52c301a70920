"""llama.cpp grammars (GBNF) that make a small model's reply parse under DSPy's adapters.

Two request shapes are recognized:

* DSPy's default :class:`dspy.ChatAdapter` asks, in the last user message, for output fields as
  ``[[ ## name ## ]]`` sections ending with ``[[ ## completed ## ]]``. :func:`chat_adapter_fields` reads the field
  names (and their Python types) from that sentence, and :func:`chat_adapter_gbnf` builds a grammar that only admits
  exactly those sections, in order. ``int``, ``float``, ``bool`` and ``Literal[...]`` values are constrained to valid
  literals; any other value is free text that cannot contain ``[[``.
* :class:`dspy.JSONAdapter` sends a JSON schema as ``response_format``; :func:`json_schema_of` extracts it (llama.cpp
  turns it into a grammar), and ``{"type": "json_object"}`` without a schema maps to generic JSON.

This module is pure Python (no llama.cpp import), so it is cheap to test.
"""

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

#: The line that ends a ChatAdapter reply.
COMPLETED_MARKER = "[[ ## completed ## ]]"

_OUTPUT_SENTENCE = "Respond with the corresponding output fields, starting with the field "
_END_SENTENCE = ", and then ending with the marker for `[[ ## completed ## ]]`"
_FIELD = re.compile(
    r"`\[\[ ## (?P<name>\w+) ## \]\]`(?: \((?:must be formatted as a valid Python (?P<type>.*?)|[^)]*)\))?"
    r"(?=, then `\[\[ ## \w+ ## \]\]`|" + re.escape(_END_SENTENCE) + ")",
    re.DOTALL,
)

#: How much text a ``str`` field may hold: one line, one paragraph (lines without a blank line), or any text.
TEXT_MODES = ("line", "paragraph", "free")

# A ``str`` value never starts a line with "[" or whitespace (small models otherwise imitate the "[[ ## x ## ]]"
# markers inside the value and never stop) and never contains "[[". Other values (lists, dicts, models) may start with
# "[" or "{" but still never contain "[[", which would start a field marker.
_TEXT_RULES = {
    "line": r"""
text ::= tstart tchar*
tstart ::= [^\[ \t\n\r]
tchar ::= [^\[\n] | "[" [^\[\n]
""".strip(),
    "paragraph": r"""
text ::= tline ("\n" tline)*
tline ::= tstart tchar*
tstart ::= [^\[ \t\n\r]
tchar ::= [^\[\n] | "[" [^\[\n]
""".strip(),
    "free": r"""
text ::= tstart tchar* ("\n"+ tstart tchar*)*
tstart ::= [^\[ \t\n\r]
tchar ::= [^\[\n] | "[" [^\[\n]
""".strip(),
}

_DATA_RULES = r"""
data ::= dstart dchar*
dstart ::= [^\[ \t\n\r] | "[" [^\[]
dchar ::= [^\[] | "[" [^\[]
""".strip()

_NUMBER_RULES = r"""
int ::= "-"? [0-9] [0-9]{0,17}
float ::= "-"? [0-9] [0-9]{0,17} ("." [0-9]{1,17})? ([eE] [-+]? [0-9]{1,3})?
bool ::= "True" | "False"
""".strip()


@dataclass(frozen=True)
class OutputField:
    """An output field the ChatAdapter asked for.

    Attributes:
        name: The field name.
        type_name: The Python type DSPy printed (``"int"``, ``"Literal['A', 'B']"``), or None for ``str``.
    """

    name: str
    type_name: str | None = None


def chat_adapter_fields(user_text: str) -> list[OutputField] | None:
    """Read the output fields from a ChatAdapter request's last user message.

    Args:
        user_text: The text of the last user message.

    Returns:
        The fields in the requested order, or None if the message is not a ChatAdapter request.
    """
    start = user_text.rfind(_OUTPUT_SENTENCE)
    if start < 0:
        return None
    tail = user_text[start + len(_OUTPUT_SENTENCE) :]
    end = tail.find(_END_SENTENCE)
    if end < 0:
        return None
    fields = [
        OutputField(m.group("name"), m.group("type")) for m in _FIELD.finditer(tail[: end + len(_END_SENTENCE)])
    ]
    return fields or None


def without_format_reminder(user_text: str) -> str:
    """The ChatAdapter message without its closing "Respond with the corresponding output fields..." sentence.

    When the engine prefills the first field's header and constrains or stops the reply itself, the sentence tells
    the model nothing it can act on; dropping it saves ~35 prompt tokens per call. Text without the sentence at its
    end is returned unchanged.
    """
    start = user_text.rfind(_OUTPUT_SENTENCE)
    if start < 0 or not user_text.rstrip().endswith(_END_SENTENCE.split(", and then ")[1] + "."):
        return user_text
    return user_text[:start].rstrip()


def is_plain_text(field: OutputField) -> bool:
    """Whether a field's value is free text (a ``str``), as opposed to a number, a choice or structured data."""
    return (field.type_name or "str").strip() == "str"


def _gbnf_literal(text: str) -> str:
    """A GBNF string literal for ``text``."""
    return json.dumps(text, ensure_ascii=False)


def literal_choices(type_name: str) -> list[str] | None:
    """The allowed spellings of a ``Literal[...]`` type as DSPy prints it, or None if it is not one."""
    if not (type_name.startswith("Literal[") and type_name.endswith("]")):
        return None
    try:
        values = ast.literal_eval("[" + type_name[len("Literal[") : -1] + "]")
    except (ValueError, SyntaxError):
        return None
    choices = [v if isinstance(v, str) else repr(v) if isinstance(v, bool) or v is None else str(v) for v in values]
    return choices or None


def _value_rule(field: OutputField) -> str:
    """The right-hand side of the grammar rule for one field's value."""
    type_name = (field.type_name or "str").strip()
    if type_name in {"int", "float", "bool"}:
        return type_name
    choices = literal_choices(type_name)
    if choices:
        return " | ".join(_gbnf_literal(c) for c in choices)
    return "text" if type_name == "str" else "data"


def chat_adapter_header(name: str) -> str:
    """The ChatAdapter's marker line for a field, e.g. ``"[[ ## answer ## ]]\\n"``."""
    return f"[[ ## {name} ## ]]\n"


def chat_adapter_gbnf(fields: list[OutputField], text_mode: str = "paragraph", *, prefilled: bool = False) -> str:
    """A GBNF grammar admitting exactly the ChatAdapter sections for ``fields`` and the completion marker.

    Args:
        fields: The output fields, in order (see :func:`chat_adapter_fields`).
        text_mode: How much text a ``str`` field may hold: ``"line"``, ``"paragraph"`` (no blank line) or ``"free"``.
        prefilled: The caller puts the first field's header at the end of the prompt (so it is evaluated as prompt,
            not generated token by token) and appends :data:`COMPLETED_MARKER` itself. The grammar then starts at the
            first value and ends after the blank line that follows the last value.

    Returns:
        The grammar text, with ``root`` as the start rule.
    """
    if not fields:
        raise ValueError("chat_adapter_gbnf needs at least one output field")
    if text_mode not in TEXT_MODES:
        raise ValueError(f"text_mode must be one of {TEXT_MODES}, got {text_mode!r}")
    sections = []
    rules = []
    for i, field in enumerate(fields):
        header = "" if prefilled and i == 0 else _gbnf_literal(chat_adapter_header(field.name)) + " "
        sections.append(f'{header}v{i} "\\n\\n"')
        rules.append(f"v{i} ::= {_value_rule(field)}")
    root = "root ::= " + " ".join(sections) + ("" if prefilled else " " + _gbnf_literal(COMPLETED_MARKER))
    return "\n".join([root, *rules, _TEXT_RULES[text_mode], _DATA_RULES, _NUMBER_RULES]) + "\n"


def json_schema_of(response_format: dict[str, Any] | None) -> tuple[bool, dict[str, Any] | None]:
    """Interpret an OpenAI/lm15 ``response_format``.

    Args:
        response_format: ``None``, ``{"type": "text"}``, ``{"type": "json_object"}`` (optionally with ``schema``),
            ``{"type": "json_schema", "schema": ...}`` (lm15) or ``{"type": "json_schema", "json_schema": {"schema":
            ...}}`` (OpenAI wire shape).

    Returns:
        ``(wants_json, schema)``: whether the reply must be JSON, and the schema if one was given.
    """
    if not response_format:
        return False, None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return False, None
    if kind == "json_object":
        return True, response_format.get("schema")
    if kind == "json_schema":
        inner = response_format.get("json_schema")
        schema = inner.get("schema") if isinstance(inner, dict) else response_format.get("schema")
        return True, schema
    raise ValueError(f"Unsupported response_format type {kind!r}; use 'json_object' or 'json_schema'.")
