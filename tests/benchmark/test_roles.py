"""Role-separated call counting against scripted LMs that count their own calls (engine requests)."""

import dspy
import pytest
from dspy.teleprompt import COPRO

from fermi_dspy import Fermi
from fermi_dspy.metrics import answer_accuracy
from programs.benchmark.roles import RoleMeter
from programs.benchmark.scripted import scripted_proposer_lm, scripted_task_lm
from programs.evaluation import evaluate_on_test
from programs.opinion_qa import OpinionQA
from tests.benchmark.conftest import OPTIONS


def examples(n):
    return [dspy.Example(question=f"Statement {i}?", options=OPTIONS, answer=OPTIONS[i % 3])
            .with_inputs("question", "options") for i in range(n)]


@pytest.mark.parametrize("threads", [1, 3])
def test_fermi_compile_calls_match_each_engine(threads):
    task, proposer = scripted_task_lm(), scripted_proposer_lm()
    meter = RoleMeter(task, proposer)
    optimizer = Fermi(prompt_model=meter.proposer, task_model=meter.task, num_iterations=2, num_candidates=3,
                      num_threads=threads, display_progress=False)
    with meter.watching():
        program = optimizer.compile(OpinionQA(), trainset=examples(10), profile={"Party": "X"})
    result = program.detailed_results
    assert meter.usage("task").usage.calls == len(task.engine.calls) == result.task_usage.calls == 6 * 8
    assert meter.usage("proposer").usage.calls == len(proposer.engine.calls) == result.proposer_usage.calls == 5
    assert meter.usage("test").usage.calls == 0 and meter.stray.calls == 0
    assert meter.usage("task").usage.total_tokens > 0 and meter.usage("proposer").usage.total_tokens > 0
    assert meter.usage("task").lm_seconds > 0


def test_fanned_out_proposals_count_as_separate_requests():
    # COPRO asks its prompt model for breadth-1 samples with n=...; DSPy 3.4 sends one request per sample.
    task, proposer = scripted_task_lm(), scripted_proposer_lm()
    meter = RoleMeter(task, proposer)
    with meter.watching(), dspy.context(lm=meter.task):
        COPRO(prompt_model=meter.proposer, metric=answer_accuracy, breadth=3, depth=2).compile(
            OpinionQA(), trainset=examples(4), eval_kwargs={"num_threads": 1, "display_progress": False})
    assert meter.usage("proposer").usage.calls == len(proposer.engine.calls) == 2 + 3
    assert meter.usage("task").usage.calls == len(task.engine.calls) == 3 * 2 * 4
    assert meter.stray.calls == 0


def test_test_calls_are_counted_apart_from_compile_calls():
    task, proposer = scripted_task_lm(), scripted_proposer_lm()
    meter = RoleMeter(task, proposer)
    with meter.watching():
        evaluate_on_test(OpinionQA(), examples(7), lm=meter.test, num_threads=2)
    assert meter.usage("test").usage.calls == len(task.engine.calls) == 7
    assert meter.usage("task").usage.calls == meter.usage("proposer").usage.calls == 0


def test_calls_by_an_lm_without_a_role_are_caught():
    task, proposer = scripted_task_lm(), scripted_proposer_lm()
    meter = RoleMeter(task, proposer)
    with meter.watching(), dspy.context(lm=task):  # the untagged original, not a role copy
        OpinionQA()(question="Statement?", options=OPTIONS)
    assert meter.stray.calls == 1 and meter.stray.models == {"scripted/task"}


def test_role_copies_share_the_engine_but_not_their_counters():
    task, proposer = scripted_task_lm(), scripted_proposer_lm()
    first, second = RoleMeter(task, proposer), RoleMeter(task, proposer)
    with dspy.context(lm=first.task):
        OpinionQA()(question="Statement?", options=OPTIONS)
    assert first.usage("task").usage.calls == 1 and second.usage("task").usage.calls == 0
    assert len(task.engine.calls) == 1
