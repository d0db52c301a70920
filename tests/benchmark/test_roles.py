"""Per-method, per-role call counting (`Roles`) against the engines of the instant LMs (engine requests)."""

import dspy
import pytest
from dspy.teleprompt import COPRO

from fermi_dspy import Fermi, answer_accuracy
from fermi_dspy.accounting import BudgetExhaustedError, UsageMeter
from fermi_dspy.programs import OpinionQA
from fermi_dspy.runs import JobContext, UserData
from fermi_dspy.testing import instant_lm
from programs.benchmark.methods.base import Roles, UserTask, compile_with
from programs.benchmark.settings import BenchmarkSettings
from programs.evaluation import evaluate_on_test
from tests.benchmark.conftest import OPTIONS


def examples(n):
    return [dspy.Example(question=f"Statement {i}?", options=OPTIONS, answer=OPTIONS[i % 3])
            .with_inputs("question", "options") for i in range(n)]


def context(max_calls=None):
    """A user's context as a run gives it: LMs counted by the user's meter."""
    user = UsageMeter()
    return JobContext(task_lm=user.track(instant_lm()), proposer_lm=user.track(instant_lm("proposer")),
                      max_calls=max_calls, max_cost=None, seed=0, num_threads=1, usage=user.usage)


@pytest.mark.parametrize("threads", [1, 3])
def test_fermi_compile_calls_match_each_engine(threads, engines):
    task, proposer = engines
    roles = Roles(context())
    optimizer = Fermi(prompt_model=roles.proposer, task_model=roles.task, num_iterations=2, num_candidates=3,
                      num_threads=threads, display_progress=False)
    result = optimizer.compile(OpinionQA(), trainset=examples(10), profile={"Party": "X"}).detailed_results
    assert roles.calls("task") == len(task.calls) == result.task_usage.calls == 6 * 8
    assert roles.calls("proposer") == len(proposer.calls) == result.proposer_usage.calls == 5
    assert roles.calls("test") == 0 and roles.context.usage().calls == roles.calls()
    assert roles.usage("task").usage.total_tokens > 0 and roles.usage("proposer").usage.total_tokens > 0
    assert roles.usage("task").lm_seconds > 0


def test_fanned_out_proposals_count_as_separate_requests(engines):
    # COPRO asks its prompt model for breadth-1 samples with n=...; DSPy 3.4 sends one request per sample.
    task, proposer = engines
    roles = Roles(context())
    with dspy.context(lm=roles.task):
        COPRO(prompt_model=roles.proposer, metric=answer_accuracy, breadth=3, depth=2).compile(
            OpinionQA(), trainset=examples(4), eval_kwargs={"num_threads": 1, "display_progress": False})
    assert roles.calls("proposer") == len(proposer.calls) == 2 + 3
    assert roles.calls("task") == len(task.calls) == 3 * 2 * 4


def test_test_calls_are_counted_apart_from_compile_calls(engines):
    roles = Roles(context())
    evaluate_on_test(OpinionQA(), examples(7), lm=roles.test, num_threads=2)
    assert roles.calls("test") == len(engines[0].calls) == 7 and roles.calls("task", "proposer") == 0


def test_calls_outside_the_roles_are_caught(hwang_file):
    user = UserData("u", tuple(examples(2)), tuple(examples(1)))
    task = UserTask(user, BenchmarkSettings(), context(), OpinionQA)

    def build(roles):
        with dspy.context(lm=task.context.task_lm):  # the user's LM itself, not the method's role copy
            OpinionQA()(question="Statement?", options=OPTIONS)
        return OpinionQA()

    assert compile_with(task, build).stray_calls == 1


def test_role_copies_share_the_engine_but_not_their_counters(engines):
    shared = context()
    first, second = Roles(shared), Roles(shared)
    with dspy.context(lm=first.task):
        OpinionQA()(question="Statement?", options=OPTIONS)
    assert first.calls("task") == 1 and second.calls("task") == 0 and len(engines[0].calls) == 1


def test_a_method_stays_within_the_users_allotment(engines):
    roles = Roles(context(max_calls=3))
    with dspy.context(lm=roles.task):
        for _ in range(3):
            OpinionQA()(question="Statement?", options=OPTIONS)
        with pytest.raises(BudgetExhaustedError):
            OpinionQA()(question="Statement?", options=OPTIONS)
    assert len(engines[0].calls) == 3
