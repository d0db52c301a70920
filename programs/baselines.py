"""Per-user baselines that need no optimization: the plain student and the profile written into its instruction."""

import dspy

from fermi_dspy import Profile, initial_prompt, with_prompt


def zero_shot(student: dspy.Module) -> dspy.Module:
    """The student as it is: no personalization."""
    return student.deepcopy()


def profile_in_prompt(student: dspy.Module, profile: Profile) -> dspy.Module:
    """The student with the user's profile placed before each predictor's instruction (Fermi's first candidate)."""
    return with_prompt(student, initial_prompt(profile))
