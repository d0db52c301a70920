"""Methods that learn nothing with an LM: the LM-free floor, the plain student, the profile prompt, few-shot."""

from programs.baselines import profile_in_prompt, zero_shot
from programs.benchmark.methods.base import MethodResult, UserTask, compile_with, require_train, score_on_test
from programs.fewshot import RetrievedFewShot
from programs.floor import MajorityPositionProgram


def run_floor(task: UserTask) -> dict[str, MethodResult]:
    """Answer with the option position the user chose most often in training (no LM call at all)."""
    require_train(task, 1, "the majority-position floor")
    compiled = compile_with(task, lambda roles: MajorityPositionProgram(task.user.train))
    return {"floor": score_on_test(task, "floor", compiled)}  # its position is not stored: it describes the answers


def run_zero_shot(task: UserTask) -> dict[str, MethodResult]:
    """The student as it is: no personalization."""
    compiled = compile_with(task, lambda roles: zero_shot(task.student()))
    return {"zero_shot": score_on_test(task, "zero_shot", compiled)}


def run_profile_prompt(task: UserTask) -> dict[str, MethodResult]:
    """The profile rendered into the student's instruction (Fermi's first candidate)."""
    compiled = compile_with(task, lambda roles: profile_in_prompt(task.student(), task.user.profile))
    return {"profile_prompt": score_on_test(task, "profile_prompt", compiled)}


def run_fewshot(task: UserTask) -> dict[str, MethodResult]:
    """The profile plus the user's k most similar past answers in the prompt (Hwang et al. 2023 style)."""
    require_train(task, 1, "retrieved few-shot")
    k = min(task.settings.fewshot_k, len(task.user.train))
    compiled = compile_with(task, lambda roles: RetrievedFewShot(task.student(), task.user.profile,
                                                                 task.user.train, k=k))
    return {"fewshot": score_on_test(task, "fewshot", compiled, details={"k": k})}
