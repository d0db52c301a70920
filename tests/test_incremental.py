"""Updating a user's program from new answers without starting over (synthetic data, scripted LMs)."""

import dspy
import pytest

from fermi_dspy import Fermi, PersonalizedProgram
from fermi_dspy.programs import OpinionQA
from tests.scripted import proposer_lm, task_lm, topic_examples

TOPICS = ["guns", "taxes", "unions", "nukes", "zoos", "polls", "bikes", "trains", "farms", "parks", "ports", "mines"]
SUPPORTED = {"guns", "unions", "zoos", "bikes", "farms", "ports"}
PROFILE = {"Party": "Independent"}


def fermi(task, proposer, **kwargs):
    settings = {"num_iterations": 2, "num_candidates": 2, "memory_size": 3, "update_iterations": 1,
                "num_threads": 1, "display_progress": False, "retrieval_fields": ["question"]}
    return Fermi(task_model=task, prompt_model=proposer, **{**settings, **kwargs})


@pytest.fixture
def first_and_more():
    first = topic_examples(TOPICS[:6], SUPPORTED)
    more = topic_examples(TOPICS[6:], SUPPORTED)
    return first, more


def test_an_update_rescores_the_previous_prompts_on_the_new_answers_only_then_iterates(first_and_more):
    first, more = first_and_more
    previous = fermi(task_lm(), proposer_lm()).compile(OpinionQA(), trainset=first, profile=PROFILE)
    kept = len(previous.prompts)
    task, proposer = task_lm(), proposer_lm()
    updated = fermi(task, proposer).compile(OpinionQA(), trainset=first + more, profile=PROFILE, init=previous)
    result = updated.detailed_results
    old_optimization = previous.router.num_optimization
    new_optimization = result.num_optimization_examples - old_optimization
    assert new_optimization > 0 and result.updated_from == kept
    assert result.rescored_calls == kept * new_optimization  # only the new answers, for the kept prompts
    scored_after = sum(len(record.candidates) for record in result.iterations) * result.num_optimization_examples
    assert len(task.engine.calls) == result.rescored_calls + scored_after == result.task_usage.calls
    assert len(proposer.engine.calls) == result.proposer_usage.calls <= 2  # one iteration of K=2 proposals
    # Retrieval-of-Prompt now knows every answer: old and new optimization examples
    assert updated.router.num_optimization == result.num_optimization_examples
    assert len(updated.router.scores[0]) == result.num_optimization_examples


def test_with_the_papers_settings_an_update_costs_under_a_third_of_a_fresh_compile(first_and_more):
    first, more = first_and_more
    paper = {"num_iterations": 10, "num_candidates": 4, "memory_size": 5, "update_iterations": 2}
    previous = fermi(task_lm(), proposer_lm(), **paper).compile(OpinionQA(), trainset=first, profile=PROFILE)
    task = task_lm()
    optimizer = fermi(task, proposer_lm(), **paper)
    updated = optimizer.compile(OpinionQA(), trainset=first + more, profile=PROFILE, init=previous)
    fresh_plan = optimizer.call_plan(len(first + more))
    assert len(task.engine.calls) == updated.detailed_results.task_usage.calls
    assert len(task.engine.calls) <= fresh_plan.task_calls / 3


def test_a_saved_and_loaded_program_can_be_updated(first_and_more, tmp_path):
    first, more = first_and_more
    previous = fermi(task_lm(), proposer_lm()).compile(OpinionQA(), trainset=first, profile=PROFILE)
    previous.save(str(tmp_path / "user.json"))
    loaded = PersonalizedProgram(OpinionQA())
    loaded.load(str(tmp_path / "user.json"))
    updated = fermi(task_lm(), proposer_lm()).compile(OpinionQA(), trainset=first + more, profile=PROFILE,
                                                      init=loaded)
    assert updated.detailed_results.updated_from == len(previous.prompts)


def test_another_users_program_is_refused_as_init_before_any_lm_call(first_and_more):
    first, _ = first_and_more
    previous = fermi(task_lm(), proposer_lm()).compile(OpinionQA(), trainset=first, profile=PROFILE)
    other_user = topic_examples(TOPICS[6:], {"trains"})
    task = task_lm()
    with pytest.raises(ValueError, match="not in this trainset: it is another user's"):
        fermi(task, proposer_lm()).compile(OpinionQA(), trainset=other_user, profile=PROFILE, init=previous)
    with pytest.raises(ValueError, match="another profile"):
        fermi(task, proposer_lm()).compile(OpinionQA(), trainset=first, profile={"Party": "Other"}, init=previous)
    with pytest.raises(TypeError, match="PersonalizedProgram"):
        fermi(task, proposer_lm()).compile(OpinionQA(), trainset=first, profile=PROFILE, init=OpinionQA())
    assert task.engine.calls == []


def test_a_program_saved_before_keys_were_recorded_cannot_be_updated(first_and_more, tmp_path):
    first, more = first_and_more
    previous = fermi(task_lm(), proposer_lm()).compile(OpinionQA(), trainset=first, profile=PROFILE)
    previous.router.example_keys, previous.router.num_optimization = [], None
    with pytest.raises(ValueError, match="compile this user afresh"):
        fermi(task_lm(), proposer_lm()).compile(OpinionQA(), trainset=first + more, profile=PROFILE, init=previous)


def test_an_update_with_no_new_answers_rescores_nothing(first_and_more):
    first, _ = first_and_more
    previous = fermi(task_lm(), proposer_lm()).compile(OpinionQA(), trainset=first, profile=PROFILE)
    task = task_lm()
    updated = fermi(task, proposer_lm(), update_iterations=0).compile(OpinionQA(), trainset=first,
                                                                      profile=PROFILE, init=previous)
    assert task.engine.calls == [] and updated.prompts == previous.prompts
    with dspy.context(lm=task_lm()):
        assert updated(**first[0].inputs()).answer == previous(**first[0].inputs()).answer
