"""Per-user baselines that need no optimization: the plain student and the profile written into its instruction."""

import dspy

from fermi_dspy.profile import Profile, initial_prompt
from fermi_dspy.variants import build_variant, target_instructions


def zero_shot(student: dspy.Module) -> dspy.Module:
    """The student as it is: no personalization."""
    return student.deepcopy()


def profile_in_prompt(student: dspy.Module, profile: Profile) -> dspy.Module:
    """The student with the user's profile placed before each predictor's instruction (Fermi's first candidate)."""
    return build_variant(student, initial_prompt(profile), target_instructions(student, None))
