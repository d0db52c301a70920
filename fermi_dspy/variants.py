"""Apply a personalization prompt to a student program, without touching the student."""

from collections.abc import Mapping, Sequence

import dspy


def compose_instruction(prompt: str, base_instruction: str) -> str:
    """The instruction a targeted predictor runs with: the personalization prompt, then its own task instruction.

    Args:
        prompt: The learned personalization prompt ("" means none).
        base_instruction: The predictor's original instruction.
    """
    prompt = prompt.strip()
    if not prompt:
        return base_instruction
    if not base_instruction.strip():
        return prompt
    return f"{prompt}\n\n{base_instruction}"


def target_instructions(student: dspy.Module, predictors: Sequence[str] | None) -> dict[str, str]:
    """The original instruction of every predictor Fermi personalizes, keyed by predictor name.

    Args:
        student: The program being personalized.
        predictors: Names from `student.named_predictors()` to personalize, or None for all of them.

    Raises:
        ValueError: The student has no predictors, or a requested name is not one of them.
    """
    named = dict(student.named_predictors())
    if not named:
        raise ValueError(
            f"The student {type(student).__name__} has no dspy.Predict inside it, so there is no prompt to "
            "personalize. Pass a dspy.Predict, dspy.ChainOfThought or a dspy.Module that holds them."
        )
    names = list(named) if predictors is None else list(predictors)
    unknown = [name for name in names if name not in named]
    if unknown:
        raise ValueError(f"predictors={unknown} are not in the student; its predictors are {sorted(named)}.")
    if not names:
        raise ValueError("predictors=[] personalizes nothing; pass None to personalize every predictor.")
    return {name: named[name].signature.instructions for name in names}


def build_variant(student: dspy.Module, prompt: str, base_instructions: Mapping[str, str]) -> dspy.Module:
    """A deep copy of `student` whose targeted predictors run with `prompt` composed into their instructions."""
    variant = student.deepcopy()
    predictors = dict(variant.named_predictors())
    for name, base in base_instructions.items():
        predictor = predictors[name]
        predictor.signature = predictor.signature.with_instructions(compose_instruction(prompt, base))
    return variant
