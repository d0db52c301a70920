"""Run a program's own predictors with a personalization prompt chosen per call: no copies, nothing mutated.

Fermi needs one student to answer with many prompts: while scoring (every candidate on every example) and at
inference (Retrieval-of-Prompt picks a prompt per query). Copying the student per prompt would hide the predictors
that really run from everything in DSPy that walks `named_predictors()`: traces, demos set by other optimizers,
`set_lm`, signatures rewritten by MIPROv2 or GEPA. Mutating the instruction per call would race under threads.

Instead, the personalized predictors are `PersonalizedPredict`s: ordinary predictors whose `signature`, read while a
prompt is active for them, is their own signature with the prompt placed before its instruction. A prompt is made
active for one call with `personalized({predictor: prompt})`, which stores it in `dspy.context` (per thread and per
async task, and carried into DSPy's own worker threads). Outside such a call, `signature` is the predictor's own, so
saving, loading, deep copies, `reset_copy` and other optimizers see and change the real thing.
"""

import contextlib
import functools
from collections.abc import Iterator, Mapping
from typing import Any

import dspy

#: The `dspy.context` key holding {id(predictor): prompt} for the current call.
ACTIVE_PROMPTS = "fermi_personal_prompts"


def compose_instruction(prompt: str, base_instruction: str) -> str:
    """The instruction a personalized predictor runs with: the personalization prompt, then its own instruction.

    Args:
        prompt: The learned personalization prompt ("" means none).
        base_instruction: The predictor's own instruction.
    """
    prompt = prompt.strip()
    if not prompt:
        return base_instruction
    if not base_instruction.strip():
        return prompt
    return f"{prompt}\n\n{base_instruction}"


@functools.lru_cache(maxsize=4096)
def _composed(signature: type[dspy.Signature], prompt: str) -> type[dspy.Signature]:
    return signature.with_instructions(compose_instruction(prompt, signature.instructions))


class PersonalizedPredictMixin:
    """Makes a predictor's `signature` carry the prompt made active for it by `personalized(...)`."""

    @property
    def signature(self) -> type[dspy.Signature]:
        own = self.__dict__["signature"]
        active = dspy.settings.get(ACTIVE_PROMPTS)
        prompt = active.get(id(self)) if active else None
        return own if prompt is None else _composed(own, prompt)

    @signature.setter
    def signature(self, value: type[dspy.Signature]) -> None:
        self.__dict__["signature"] = value


class PersonalizedPredict(PersonalizedPredictMixin, dspy.Predict):
    """A `dspy.Predict` that runs with a personalization prompt while one is active for it."""


_CLASSES: dict[type, type] = {dspy.Predict: PersonalizedPredict}


def _personalizable_class(cls: type) -> type:
    if issubclass(cls, PersonalizedPredictMixin):
        return cls
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Personalized{cls.__name__}", (PersonalizedPredictMixin, cls),
                             {"__module__": __name__, "__doc__": cls.__doc__})
    return _CLASSES[cls]


def as_personalizable(predictor: dspy.Predict) -> dspy.Predict:
    """The same predictor (same state: signature, demos, LM, config) as a personalizable one; itself if it is one."""
    cls = _personalizable_class(type(predictor))
    if type(predictor) is cls:
        return predictor
    twin = cls.__new__(cls)
    twin.__dict__.update(predictor.__dict__)
    return twin


def personalizable_copy(program: dspy.Module) -> dspy.Module:
    """A deep copy of `program` whose predictors can all be personalized; `program` itself is not changed."""
    copy = program.deepcopy()
    if isinstance(copy, dspy.Predict):
        return as_personalizable(copy)
    copy.map_named_predictors(as_personalizable)
    return copy


@contextlib.contextmanager
def personalized(prompts: Mapping[Any, str]) -> Iterator[None]:
    """Run the block with `prompts` ({predictor: prompt}) active; nested blocks add to the outer ones."""
    active = dict(dspy.settings.get(ACTIVE_PROMPTS) or {})
    active.update({id(predictor): prompt for predictor, prompt in prompts.items()})
    with dspy.context(**{ACTIVE_PROMPTS: active}):
        yield
