"""Scripted LMs for the main-job tests, importable by spec "factory:tests.programs.lms:<name>" (synthetic answers)."""

import itertools

from fermi_dspy.testing import rule_lm, shown_options


def _task(system: str, user: str) -> dict:
    choices = shown_options(user) or ["?"]
    return {"answer": choices[1 if "second" in system and len(choices) > 1 else 0]}


_counter = itertools.count()
TASK = rule_lm(_task, model="rule/task")
PROPOSER = rule_lm(lambda s, u: {"new_prompt": f"Pick the second option. ({next(_counter)})"}, model="rule/proposer")


def lm(role: str = "task"):
    """The shared scripted LM of a role (their engines record every call)."""
    return TASK if role == "task" else PROPOSER
