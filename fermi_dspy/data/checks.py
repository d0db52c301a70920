"""Validation of raw JSON fields: each check returns the clean value or raises `InvalidItem` with the reason."""

from collections.abc import Mapping
from typing import Any

from fermi_dspy.data.problems import (
    ANSWER_NOT_IN_OPTIONS,
    BAD_OPTIONS,
    INCONSISTENT_ANSWER,
    INVALID_FIELD,
    MISSING_FIELD,
    NULL_ANSWER,
    short_repr,
)


class InvalidItem(Exception):  # noqa: N818 -- internal control flow, never escapes the loaders
    """A raw record or answer failed validation."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def require(obj: Mapping[str, Any], key: str) -> Any:
    """Return `obj[key]`, raising `InvalidItem` if it is absent or null."""
    if key not in obj:
        raise InvalidItem(MISSING_FIELD, f"missing required field {key!r}")
    value = obj[key]
    if value is None:
        raise InvalidItem(MISSING_FIELD, f"required field {key!r} is null")
    return value


def require_str(obj: Mapping[str, Any], key: str) -> str:
    """Return `obj[key]` as a non-empty string, raising `InvalidItem` otherwise."""
    value = require(obj, key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidItem(INVALID_FIELD, f"field {key!r} must be a non-empty string, got {short_repr(value)}")
    return value


def require_list(obj: Mapping[str, Any], key: str) -> list[Any]:
    """Return `obj[key]`, raising `InvalidItem` unless it is a list."""
    value = require(obj, key)
    if not isinstance(value, list):
        raise InvalidItem(INVALID_FIELD, f"field {key!r} must be a list, got {type(value).__name__}")
    return value


def require_id(obj: Mapping[str, Any], key: str) -> str:
    """Return `obj[key]` (a non-empty string or an integer) as a string."""
    value = require(obj, key)
    if isinstance(value, bool) or not isinstance(value, str | int) or (isinstance(value, str) and not value.strip()):
        raise InvalidItem(INVALID_FIELD, f"field {key!r} must be a non-empty string or an integer, got {value!r}")
    return str(value)


def check_profile(value: Any, key: str) -> dict[str, str]:
    """Check a profile: a JSON object of attribute -> string value."""
    if not isinstance(value, dict):
        raise InvalidItem(
            INVALID_FIELD, f"field {key!r} must be an object of attribute -> value, got {short_repr(value)}"
        )
    for attr, attr_value in value.items():
        if not isinstance(attr_value, str):
            raise InvalidItem(INVALID_FIELD, f"{key}[{attr!r}] must be a string, got {short_repr(attr_value)}")
    return dict(value)


def check_options(value: Any, key: str = "options") -> list[str]:
    """Check answer options: a list of at least two distinct strings."""
    if not isinstance(value, list):
        raise InvalidItem(BAD_OPTIONS, f"{key!r} must be a list of strings, got {short_repr(value)}")
    if len(value) < 2:
        raise InvalidItem(BAD_OPTIONS, f"{key!r} must have at least 2 options, got {short_repr(value)}")
    if not all(isinstance(o, str) and o.strip() for o in value):
        raise InvalidItem(BAD_OPTIONS, f"{key!r} must all be non-empty strings, got {short_repr(value)}")
    if len(set(value)) != len(value):
        dups = sorted({o for o in value if value.count(o) > 1})
        raise InvalidItem(BAD_OPTIONS, f"{key!r} repeats {dups}, so the answer is ambiguous")
    return list(value)


def check_answer(answer: Any, options: list[str], *, key: str = "answer", null_note: str = "") -> str:
    """Check that the chosen answer is one of the options.

    Args:
        answer: The raw answer value.
        options: The (already checked) options.
        key: The field name, for messages.
        null_note: Extra text for a null answer (e.g. what the source had instead).

    Returns:
        The answer.

    Raises:
        InvalidItem: The answer is null, not a string, or not among the options.
    """
    if answer is None:
        raise InvalidItem(NULL_ANSWER, f"{key!r} is null (no recorded choice{null_note})")
    if not isinstance(answer, str):
        raise InvalidItem(INVALID_FIELD, f"{key!r} must be a string, got {short_repr(answer)}")
    if answer not in options:
        raise InvalidItem(ANSWER_NOT_IN_OPTIONS, f"{key} {answer!r} is not among its options {short_repr(options)}")
    return answer


def check_answer_index(index: Any, options: list[str], answer: str) -> None:
    """If an `answer_index` is given, check that it points at `answer`."""
    if index is None:
        return
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(options):
        raise InvalidItem(
            INCONSISTENT_ANSWER, f"answer_index {index!r} is not a position in its {len(options)} options"
        )
    if options[index] != answer:
        raise InvalidItem(
            INCONSISTENT_ANSWER, f"answer_index {index} points to {options[index]!r} but answer is {answer!r}"
        )
