"""Fermi and its ablations: Retrieval-of-Prompt, the single best prompt, no profile, and OPRO (scores only).

Fermi with the single best prompt reuses Fermi's compile (the same kept prompts and scores); only the prompt chosen
at answer time differs, so the two differ in nothing but the selection rule.
"""

from dataclasses import replace
from typing import Any

import dspy

from fermi_dspy import Fermi, FermiResult, PersonalizedProgram, answer_probability
from fermi_dspy.validation import MIN_TRAINSET_SIZE
from programs.benchmark.methods.base import (
    Compiled,
    MethodResult,
    Roles,
    UserTask,
    compile_with,
    require_train,
    score_on_test,
)


def fermi_details(result: FermiResult) -> dict[str, Any]:
    """What a compile did, in numbers only (no prompt text: prompts may quote the profile and answers)."""
    return {
        "stop_reason": result.stop_reason,
        "best_train_score": round(result.best_score, 4),
        "candidates_scored": result.num_candidates_scored,
        "iterations": len(result.iterations),
        "prompts_kept": len(result.memory),
        "optimization_examples": result.num_optimization_examples,
        "demonstration_examples": result.num_demonstration_examples,
        "fermi_counted_task_calls": result.task_usage.calls,
        "fermi_counted_proposer_calls": result.proposer_usage.calls,
        "proposals_rejected": result.proposals_rejected,
        "proposals_salvaged": result.proposals_salvaged,
    }


def with_selection(program: PersonalizedProgram, student: dspy.Module, selection: str) -> PersonalizedProgram:
    """The same personalized program (same prompts and scores) answering with another selection rule."""
    state = program.dump_state()
    state["router"] = {**state["router"], "selection": selection}
    copy = PersonalizedProgram(student)
    copy.load_state(state)
    return copy


def compile_fermi(task: UserTask, *, feedback: str = "misaligned", with_profile: bool = True,
                  metric: Any = None) -> Compiled:
    """Compile the user's student with Fermi (the run's T, K, L and N~, `BenchmarkSettings.fermi`) on the user's
    training answers; `metric` None is the task's (`rating_score` for ratings, else per-user accuracy)."""
    require_train(task, MIN_TRAINSET_SIZE, "Fermi")
    profile = task.user.profile if with_profile else None

    def build(roles: Roles) -> PersonalizedProgram:
        fermi = {**task.settings.fermi(), **({} if metric is None else {"metric": metric})}
        optimizer = Fermi(**fermi, prompt_model=roles.proposer, task_model=roles.task, feedback=feedback,
                          num_threads=task.settings.num_threads, seed=task.settings.seed, display_progress=False)
        return optimizer.compile(task.student(), trainset=task.user.train, profile=profile)

    compiled = compile_with(task, build)
    compiled.details.update(fermi_details(compiled.program.detailed_results))
    program = compiled.program
    routes = [program.route(**example.inputs()) for example in task.user.test]  # no LM call
    compiled.details["test_routed_past_best"] = sum(route != program.best_index for route in routes)
    return compiled


def run_fermi(task: UserTask) -> dict[str, MethodResult]:
    """Fermi (Retrieval-of-Prompt) and, from the same compile, Fermi answering with the single best prompt."""
    compiled = compile_fermi(task)
    results = {"fermi": score_on_test(task, "fermi", compiled)}
    if "fermi_best" in task.settings.methods:
        best = replace(compiled, program=with_selection(compiled.program, task.student(), "best"),
                       details=dict(compiled.details))
        results["fermi_best"] = score_on_test(task, "fermi_best", best, roles=task.roles(), shared_compile="fermi")
    return results


def run_fermi_soft(task: UserTask) -> dict[str, MethodResult]:
    """Fermi optimizing the task LM's probability of the user's answer (`answer_probability`); scored, like every
    method, by test accuracy."""
    return {"fermi_soft": score_on_test(task, "fermi_soft", compile_fermi(task, metric=answer_probability))}


def run_fermi_no_profile(task: UserTask) -> dict[str, MethodResult]:
    """Fermi given no profile: it starts from the plain student and its proposer sees "(no profile given)"."""
    return {"fermi_no_profile": score_on_test(task, "fermi_no_profile", compile_fermi(task, with_profile=False))}


def run_opro(task: UserTask) -> dict[str, MethodResult]:
    """OPRO-style: Fermi's loop (same T, K, L, start prompt, selection); the proposer sees prompts and scores only."""
    return {"opro": score_on_test(task, "opro", compile_fermi(task, feedback="scores"))}
