"""DSPy's own optimizers compiled per user: COPRO, MIPROv2 (instruction-only) and GEPA, on budgets from `budgets`.

Each starts from the profile-in-prompt student (the same starting point and information as Fermi's first
candidate), learns from the user's training answers only, and uses the run's task LM for the program and the
proposer LM as its prompt model (COPRO, MIPROv2) or reflection LM (GEPA). Without a profile (the MovieLens tasks) the
starting student is the plain one; GEPA then learns from the task's feedback metric (`rating_score` for ratings),
while COPRO and MIPROv2 are opinion-only (`programs.benchmark.settings.TASK_METHODS`).
"""

from typing import Any

import dspy
from dspy.teleprompt import COPRO, GEPA, MIPROv2

from fermi_dspy.metrics import answer_accuracy
from programs.baselines import profile_in_prompt
from programs.benchmark.budgets import copro_config, gepa_config, mipro_config
from programs.benchmark.methods.base import MethodResult, Roles, UserTask, compile_with, require_train, score_on_test

NO_ERROR_LIMIT = 10**6
"""Evaluation errors an optimizer tolerates (each scores 0) instead of aborting the user's compile."""

MIPRO_MIN_TRAIN = 2
"""MIPROv2 without a valset needs 2 training answers (it splits off its own valset)."""


def starting_student(task: UserTask) -> dspy.Module:
    """The student with the user's profile in its instruction: what each DSPy optimizer starts from."""
    return profile_in_prompt(task.student(), task.user.profile)


def run_copro(task: UserTask) -> dict[str, MethodResult]:
    """COPRO with breadth K and depth T (OPRO-style instruction search inside DSPy)."""
    require_train(task, 1, "COPRO")
    config = copro_config(task.settings)
    details: dict[str, Any] = {"breadth": config.breadth, "depth": config.depth}

    def build(roles: Roles) -> dspy.Module:
        optimizer = COPRO(prompt_model=roles.proposer, metric=answer_accuracy, breadth=config.breadth,
                          depth=config.depth, init_temperature=config.init_temperature)
        program = optimizer.compile(starting_student(task), trainset=list(task.user.train), eval_kwargs={
            "num_threads": task.settings.num_threads, "display_progress": False})
        details.update(candidates_scored=getattr(program, "total_calls", None),
                       best_train_score=_score(program.candidate_programs[0]["score"], percent=True))
        return program

    return {"copro": score_on_test(task, "copro", compile_with(task, build), details=details)}


def run_mipro(task: UserTask) -> dict[str, MethodResult]:
    """MIPROv2 with zero demos (instructions only), N = T*K instruction candidates and T*K - 1 trials."""
    require_train(task, MIPRO_MIN_TRAIN, "MIPROv2 (no valset: it splits one off the trainset)")
    config = mipro_config(task.settings)
    details: dict[str, Any] = {"num_candidates": config.num_candidates, "num_trials": config.num_trials}

    def build(roles: Roles) -> dspy.Module:
        optimizer = MIPROv2(metric=answer_accuracy, prompt_model=roles.proposer, task_model=roles.task, auto=None,
                            num_candidates=config.num_candidates, max_bootstrapped_demos=config.max_bootstrapped_demos,
                            max_labeled_demos=config.max_labeled_demos, num_threads=task.settings.num_threads,
                            max_errors=NO_ERROR_LIMIT, seed=task.settings.seed,
                            init_temperature=config.init_temperature, verbose=False)
        program = optimizer.compile(starting_student(task), trainset=list(task.user.train),
                                    num_trials=config.num_trials, minibatch=config.minibatch,
                                    program_aware_proposer=config.program_aware_proposer, seed=task.settings.seed)
        details.update(best_train_score=_score(getattr(program, "score", None), percent=True),
                       trials_logged=len(getattr(program, "trial_logs", {}) or {}))
        return program

    return {"mipro": score_on_test(task, "mipro", compile_with(task, build), details=details)}


def run_gepa(task: UserTask) -> dict[str, MethodResult]:
    """GEPA with Fermi's task-LM call budget and the task's feedback metric, which states the user's answer."""
    require_train(task, 1, "GEPA")
    config = gepa_config(task.settings)
    details: dict[str, Any] = {"max_metric_calls": config.max_metric_calls}

    def build(roles: Roles) -> dspy.Module:
        optimizer = GEPA(metric=task.spec.feedback_metric, max_metric_calls=config.max_metric_calls,
                         reflection_lm=roles.proposer, reflection_minibatch_size=config.reflection_minibatch_size,
                         num_threads=task.settings.num_threads, seed=task.settings.seed, track_stats=True)
        program = optimizer.compile(starting_student(task), trainset=list(task.user.train))
        result = getattr(program, "detailed_results", None)
        if result is not None:
            details.update(metric_calls=result.total_metric_calls, candidates=len(result.candidates),
                           best_train_score=_score(result.val_aggregate_scores[result.best_idx]))
        return program

    return {"gepa": score_on_test(task, "gepa", compile_with(task, build), details=details)}


def _score(value: Any, *, percent: bool = False) -> float | None:
    """A train score as a rounded fraction (COPRO and MIPROv2 report `Evaluate` percentages, GEPA fractions)."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return round(score / 100.0 if percent else score, 4)
