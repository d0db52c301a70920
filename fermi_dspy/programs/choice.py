"""Helpers for students that answer by choosing: lettered options and per-call choice constraints.

A student that answers a multiple-choice question with an option's letter can constrain its output to exactly the
letters of that question by passing a signature whose output field is `Literal[...]` of those letters, for that one
call (`predictor(..., signature=with_choices(predictor.signature, "answer", letters))`). DSPy then tells the LM the
allowed values, validates the reply against them (retrying with its JSON adapter when the reply does not parse),
asks structured-output LMs for an enum, and the local engine answers from the allowed tokens alone. The predictor
that runs is still the student's own (its demos, LM and traces are unchanged).

DSPy's ChatAdapter prints every output type in the system message, before the instructions. A per-question type
would make the system message, and so the long prefix a local engine keeps in its KV cache, differ with every
option count. `stable_adapter()` gives a ChatAdapter that prints per-call choice fields as plain `str` in the system
message and states the exact choices only in the user message (where the engine reads its constraint); parsing
still validates against the per-call choices.
"""

import functools
import string
from collections.abc import Sequence
from typing import Any, Literal

import dspy

from fermi_dspy.logprobs import choice_probabilities

#: json_schema_extra key marking an output field whose choices are set per call.
PER_CALL_CHOICES = "fermi_per_call_choices"

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
    return signature.with_updated_fields(field, type_=Literal[choices], **{PER_CALL_CHOICES: True})


@functools.lru_cache(maxsize=1024)
def _without_per_call_choices(signature: type[dspy.Signature]) -> type[dspy.Signature]:
    for name, info in signature.output_fields.items():
        if (info.json_schema_extra or {}).get(PER_CALL_CHOICES):
            signature = signature.with_updated_fields(name, type_=str)
    return signature


class StableChatAdapter(dspy.ChatAdapter):
    """A ChatAdapter whose system message does not change with per-call choices (see the module docstring)."""

    def format_system_message(self, signature: type[dspy.Signature]) -> str:
        return super().format_system_message(_without_per_call_choices(signature))


def stable_adapter(current: Any) -> Any:
    """The adapter to answer a per-call choice with: `StableChatAdapter` in place of DSPy's default ChatAdapter
    (`current` None, or a plain `dspy.ChatAdapter`, whose settings are kept); any other adapter as it is."""
    if current is None:
        return StableChatAdapter()
    if type(current) is dspy.ChatAdapter:
        return StableChatAdapter(callbacks=current.callbacks,
                                 use_native_function_calling=current.use_native_function_calling,
                                 native_response_types=current.native_response_types,
                                 use_json_adapter_fallback=current.use_json_adapter_fallback,
                                 parallel_tool_calls=current.parallel_tool_calls)
    return current


def _chosen(prediction: dspy.Prediction, field: str, choices: tuple[str, ...]) -> str:
    value = str(prediction[field]).strip()
    if value not in choices:
        raise ValueError(f"The LM answered {prediction[field]!r}, not one of {list(choices)}.")
    return value


def choose(predictor: dspy.Predict, field: str, choices: tuple[str, ...], **inputs: Any) -> tuple[str, Any]:
    """Call `predictor` with its output `field` constrained to `choices` for this call.

    Returns:
        (the chosen value, the LM's probability of each choice, or None without log-probabilities).
    """
    signature = with_choices(predictor.signature, field, choices)
    with dspy.context(adapter=stable_adapter(dspy.settings.adapter)):
        prediction = predictor(**inputs, signature=signature)
    return _chosen(prediction, field, choices), choice_probabilities(prediction.get("logprobs"), choices, field=field)


async def achoose(predictor: dspy.Predict, field: str, choices: tuple[str, ...], **inputs: Any) -> tuple[str, Any]:
    """`choose`, asynchronously."""
    signature = with_choices(predictor.signature, field, choices)
    with dspy.context(adapter=stable_adapter(dspy.settings.adapter)):
        prediction = await predictor.acall(**inputs, signature=signature)
    return _chosen(prediction, field, choices), choice_probabilities(prediction.get("logprobs"), choices, field=field)
