"""Methods that learn nothing with an LM: the LM-free floor, the plain student, the profile prompt, few-shot."""

from programs.baselines import profile_in_prompt, zero_shot
from programs.benchmark.methods.base import MethodResult, UserTask, compile_with, require_train, score_on_test
from programs.fewshot import RetrievedFewShot
from programs.tasks import unrounded_floor_errors


def run_floor(task: UserTask) -> dict[str, MethodResult]:
    """The task's LM-free floor (no LM call at all): the option position the user chose most often, the user's mean
    rating rounded to a whole star (its MAE/RMSE from the unrounded mean go into the details), or the most frequent
    tag."""
    spec = task.spec
    require_train(task, 1, f"the LM-free floor ({spec.floor_label})")
    compiled = compile_with(task, lambda roles: spec.floor(task.user.train))
    extra = unrounded_floor_errors(task.user.train, task.user.test) if spec.is_rating else None
    # What the floor answers (a position, a mean, a tag) is not stored: it describes the user's answers.
    return {"floor": score_on_test(task, "floor", compiled, details=extra)}


def run_zero_shot(task: UserTask) -> dict[str, MethodResult]:
    """The student as it is: no personalization."""
    compiled = compile_with(task, lambda roles: zero_shot(task.student()))
    return {"zero_shot": score_on_test(task, "zero_shot", compiled)}


def run_profile_prompt(task: UserTask) -> dict[str, MethodResult]:
    """The profile rendered into the student's instruction (Fermi's first candidate)."""
    compiled = compile_with(task, lambda roles: profile_in_prompt(task.student(), task.user.profile))
    return {"profile_prompt": score_on_test(task, "profile_prompt", compiled)}


def run_fewshot(task: UserTask) -> dict[str, MethodResult]:
    """The profile (if any) plus the user's k most similar past answers in the prompt (Hwang et al. 2023 style;
    LaMP's retrieval baseline on the MovieLens tasks)."""
    require_train(task, 1, "retrieved few-shot")
    k = min(task.settings.fewshot_k, len(task.user.train))
    compiled = compile_with(task, lambda roles: RetrievedFewShot(task.student(), task.user.profile,
                                                                 task.user.train, k=k, past=task.spec.past))
    return {"fewshot": score_on_test(task, "fewshot", compiled, details={"k": k})}
