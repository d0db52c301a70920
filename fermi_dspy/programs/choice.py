"""Helpers for students that answer by choosing: lettered options and per-call choice constraints.

A student that answers a multiple-choice question with an option's letter can constrain its output to exactly the
letters of that question by passing a signature whose output field is `Literal[...]` of those letters, for that one
call (`predictor(..., signature=with_choices(predictor.signature, "answer", letters))`). DSPy then tells the LM the
allowed values, validates the reply against them (retrying with its JSON adapter when the reply does not parse),
asks structured-output LMs for an enum, and the local engine answers from the allowed tokens alone. The predictor
that runs is still the student's own (its demos, LM and traces are unchanged).
"""

import functools
import string
from collections.abc import Sequence
from typing import Literal

import dspy

LETTERS = string.ascii_uppercase


def option_letters(count: int) -> tuple[str, ...]:
    """The letters of `count` options: ("A", "B", ...).

    Raises:
        ValueError: Fewer than 1 or more than 26 options.
    """
    if not 1 <= count <= len(LETTERS):
        raise ValueError(f"A multiple-choice question needs 1 to {len(LETTERS)} options, got {count}.")
    return tuple(LETTERS[:count])


def format_options(options: Sequence[object]) -> str:
    """The options one per line, each after its letter: "A. first\\nB. second"."""
    letters = option_letters(len(options))
    return "\n".join(f"{letter}. {' '.join(str(option).split())}" for letter, option in zip(letters, options,
                                                                                           strict=True))


@functools.lru_cache(maxsize=1024)
def with_choices(signature: type[dspy.Signature], field: str, choices: tuple[str, ...]) -> type[dspy.Signature]:
    """`signature` with the output `field` typed as `Literal[choices]` (cached: signatures are immutable)."""
    return signature.with_updated_fields(field, type_=Literal[choices])
