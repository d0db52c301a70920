"""User profiles: validation and rendering into prompt text."""

from collections.abc import Mapping
from typing import Any, TypeAlias

Profile: TypeAlias = Mapping[str, Any] | str | None
"""A user's profile: attribute -> value (e.g. OpinionQA demographics), free text, or None."""

PROFILE_INTRO = "A person can be described as follows:"
PROFILE_TASK = "Answer every question exactly as this person would."


def validate_profile(profile: Any) -> None:
    """Raise a clear error if `profile` is not a mapping of scalars, a string, or None.

    Args:
        profile: The candidate profile.

    Raises:
        TypeError: The profile has the wrong type, or holds a value that cannot be rendered as text.
    """
    if profile is None or isinstance(profile, str):
        return
    if not isinstance(profile, Mapping):
        raise TypeError(
            f"profile must be a dict of attribute -> value, a string, or None; got {type(profile).__name__}. "
            "Pass e.g. profile={'Age': '65+', 'Political party': 'Republican'} or a text description."
        )
    for key, value in profile.items():
        if not isinstance(key, str):
            raise TypeError(f"profile keys must be strings; got {key!r} ({type(key).__name__}).")
        if isinstance(value, Mapping):
            raise TypeError(
                f"profile[{key!r}] is a nested mapping; flatten it (e.g. {key!r}: 'a; b') or pass the profile as text."
            )
        if not isinstance(value, str | int | float | bool | list | tuple) and value is not None:
            raise TypeError(f"profile[{key!r}] has type {type(value).__name__}; use a string, number or list.")


def render_profile(profile: Profile) -> str:
    """Render a profile as text, one attribute per line.

    Args:
        profile: A mapping, a string, or None.

    Returns:
        The rendered profile ("" for None or an empty profile).
    """
    validate_profile(profile)
    if profile is None:
        return ""
    if isinstance(profile, str):
        return profile.strip()
    lines = []
    for key, value in profile.items():
        if value is None or value == "":
            continue
        if isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value)
        lines.append(f"- {key}: {value}")
    return "\n".join(lines)


def initial_prompt(profile: Profile) -> str:
    """The first candidate prompt: the rendered profile followed by the personalization task.

    Args:
        profile: The user's profile.

    Returns:
        The prompt, or "" when there is no profile (the student's own instruction is then used alone).
    """
    rendered = render_profile(profile)
    if not rendered:
        return ""
    return f"{PROFILE_INTRO}\n{rendered}\n{PROFILE_TASK}"
