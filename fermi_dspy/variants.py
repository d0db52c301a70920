"""Which predictors of a student are personalized, and fixed variants of a student with a prompt built in."""

from collections.abc import Mapping, Sequence

import dspy

from fermi_dspy.personalize import compose_instruction


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
    """A deep copy of `student` whose targeted predictors always run with `prompt` composed into their instructions.

    For fixed programs (e.g. the profile-in-prompt baseline). Fermi itself runs one copy with a prompt chosen per
    call (`fermi_dspy.personalize`).
    """
    variant = student.deepcopy()
    predictors = dict(variant.named_predictors())
    for name, base in base_instructions.items():
        predictor = predictors[name]
        predictor.signature = predictor.signature.with_instructions(compose_instruction(prompt, base))
    return variant


def with_prompt(student: dspy.Module, prompt: str, predictors: Sequence[str] | None = None) -> dspy.Module:
    """A copy of `student` that always answers with `prompt` placed before its predictors' own instructions.

    The same composition Fermi uses for its kept prompts, as a fixed program: e.g. the profile written into the
    prompt (`with_prompt(student, fermi_dspy.initial_prompt(profile))`), or a prompt learned elsewhere.

    Args:
        student: The program (left unchanged).
        prompt: The prompt ("" gives an unchanged copy).
        predictors: Names from `student.named_predictors()` to give the prompt to; None for all of them.

    Raises:
        ValueError: The student has no predictors, or a name is not one of them.
    """
    return build_variant(student, prompt, target_instructions(student, predictors))
