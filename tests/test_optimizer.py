"""Fermi's optimization loop, offline, with scripted LMs whose answers depend on the prompt."""

import logging

import dspy
import pytest

from fermi_dspy import Fermi, PersonalizedProgram
from fermi_dspy.optimizer import split_examples
from fermi_dspy.programs import OpinionQA
from fermi_dspy.testing import rule_lm
from tests.scripted import proposer_lm, task_lm, topic_examples


def fermi(**kwargs):
    settings = {"num_iterations": 4, "num_candidates": 3, "num_threads": 2, "display_progress": False}
    settings.update(kwargs)
    return Fermi(prompt_model=settings.pop("prompt_model", proposer_lm()),
                 task_model=settings.pop("task_model", task_lm()), **settings)


def test_get_params_returns_constructor_arguments_as_given():
    optimizer = Fermi(num_iterations=7, memory_size=3, selection="best", seed=0)
    params = optimizer.get_params()
    assert params["num_iterations"] == 7 and params["memory_size"] == 3 and params["selection"] == "best"
    assert params["seed"] == 0 and params["prompt_model"] is None and params["num_candidates"] == 4


def test_paper_defaults():
    params = Fermi().get_params()
    assert (params["num_iterations"], params["num_candidates"], params["memory_size"]) == (10, 4, 5)
    assert params["misaligned_threshold"] == 1.0 and params["num_retrieved"] == 3
    assert params["proposer_temperature"] == 1.0 and params["task_temperature"] == 0.0
    assert params["selection"] == "retrieval"


def test_fermi_learns_from_misaligned_examples_and_beats_its_initial_prompt(examples):
    program = fermi().compile(OpinionQA(), trainset=examples, profile={"Party": "Democrat"})
    result = program.detailed_results
    initial = result.iterations[0].candidates[0]
    assert initial.prompt.startswith("A person can be described as follows:")
    assert result.best_score > initial.mean_score
    assert result.best_score == 1.0 and result.stop_reason == "perfect"
    assert "supports" in program.prompts[0] and "guns" in program.prompts[0] and "taxes" in program.prompts[0]


def test_opro_view_hides_misaligned_examples_and_cannot_learn_them(examples):
    proposer = proposer_lm()
    program = fermi(prompt_model=proposer, feedback="scores").compile(OpinionQA(), trainset=examples, profile=None)
    assert program.detailed_results.best_score < 1.0
    assert not any("The person's answer: Yes" in c.user.split("[[ ## scored_prompts ## ]]")[-1]
                   for c in proposer.engine.calls)


def test_proposer_receives_profile_demonstrations_and_the_memorys_misaligned_examples(examples):
    proposer = proposer_lm()
    fermi(prompt_model=proposer, num_iterations=2).compile(OpinionQA(), trainset=examples, profile={"Age": "65+"})
    later = [c for c in proposer.engine.calls if "Prompt 1 (score" in c.user]
    assert later, "the second iteration's proposals must see the memory"
    text = later[0].user
    assert "- Age: 65+" in text
    assert "[[ ## demonstrations ## ]]\nExample 1:" in text
    assert "Mis-aligned examples" in text and "model answered 'No'" in text
    assert "The person's answer: Yes" in text
    # ascending order of score: the last listed prompt is the best one
    scores = [float(s) for s in __import__("re").findall(r"Prompt \d+ \(score ([0-9.]+)\)", text)]
    assert scores == sorted(scores)


def test_memory_keeps_the_top_l_prompts(examples):
    program = fermi(memory_size=2, num_iterations=3).compile(OpinionQA(), trainset=examples, profile={"A": "b"})
    result = program.detailed_results
    assert len(program.prompts) == 2 and len(result.memory) == 2
    every = sorted((c for r in result.iterations for c in r.candidates), key=lambda c: (-c.mean_score, c.index))
    assert [p.prompt for p in result.memory] == [c.prompt for c in every[:2]]
    assert all(len(r.memory_scores) <= 2 for r in result.iterations)


def test_k_new_distinct_prompts_per_iteration_and_t_iterations(examples):
    program = fermi(num_iterations=3, num_candidates=3, task_model=rule_lm(lambda s, u: {"answer": "No"})).compile(
        OpinionQA(), trainset=examples, profile={"A": "b"}
    )
    result = program.detailed_results
    assert len(result.iterations) == 3 and result.stop_reason == "completed"
    prompts = [c.prompt for r in result.iterations for c in r.candidates]
    assert len(prompts) == 9 and len(set(prompts)) == 9


def test_same_seed_same_result_and_different_seed_different_split(examples):
    def run(seed):
        program = fermi(num_threads=1, seed=seed).compile(OpinionQA(), trainset=examples, profile={"A": "b"})
        return program.detailed_results.to_dict() | {"seconds": 0}

    first, second = run(3), run(3)
    assert first == second
    import random

    assert split_examples(examples, 0.2, random.Random(3)) != split_examples(examples, 0.2, random.Random(4))


def test_split_is_deterministic_and_keeps_both_parts():
    data = topic_examples([f"t{i}" for i in range(10)], supported=set())
    import random

    optimization, demos = split_examples(data, 0.2, random.Random(0))
    assert len(optimization) == 8 and len(demos) == 2
    assert split_examples(data, 0.2, random.Random(0)) == (optimization, demos)
    optimization, demos = split_examples(data[:2], 0.2, random.Random(0))
    assert len(optimization) == 1 and len(demos) == 1


def test_student_is_never_mutated(examples):
    student = OpinionQA()
    before = student.dump_state()
    fermi().compile(student, trainset=examples, profile={"A": "b"})
    assert student.dump_state() == before


def test_task_lm_runs_at_temperature_zero_and_proposer_at_one(examples):
    task, proposer = task_lm(), proposer_lm()
    fermi(task_model=task, prompt_model=proposer, num_iterations=2).compile(OpinionQA(), trainset=examples)
    assert {c.temperature for c in task.engine.calls} == {0.0}
    assert {c.temperature for c in proposer.engine.calls} == {1.0}


def test_lms_resolved_from_dspy_settings_at_compile_time(examples):
    task = task_lm()
    optimizer = Fermi(num_iterations=1, num_candidates=1, display_progress=False)
    with dspy.context(lm=task):
        program = optimizer.compile(OpinionQA(), trainset=examples, profile={"A": "b"})
    assert task.engine.calls and program.detailed_results.iterations
    assert optimizer.get_params()["task_model"] is None


def test_missing_lm_is_a_clear_error(examples):
    with dspy.context(lm=None), pytest.raises(ValueError, match="needs a task LM"):
        Fermi(display_progress=False).compile(OpinionQA(), trainset=examples)


def test_unparseable_and_empty_proposals_are_logged_and_skipped(examples, caplog):
    replies = iter(["no fields here at all", "[[ ## new_prompt ## ]]\n\n\n[[ ## completed ## ]]"])

    def respond(system, user):
        try:
            return {"raw": next(replies)}
        except StopIteration:
            return {"new_prompt": "This person supports guns, taxes."}

    class RawEngine(type(task_lm().engine)):
        def complete(self, request):
            fields = self.respond("", "")
            if "raw" in fields:
                from dspy.lm15 import Message, Response, TextPart, Usage

                return Response(id=None, model=request.model, message=Message.assistant([TextPart(fields["raw"])]),
                                finish_reason="stop", usage=Usage(input_tokens=1, output_tokens=1, total_tokens=2))
            return super().complete(request)

    proposer = dspy.LM("rule/raw", engine=RawEngine(respond), cache=False)
    with caplog.at_level(logging.WARNING, logger="fermi_dspy"):
        program = fermi(prompt_model=proposer, num_threads=1, num_iterations=2).compile(
            OpinionQA(), trainset=examples, profile={"A": "b"}
        )
    assert program.detailed_results.iterations[0].proposals_skipped >= 1
    assert "Skipped" in caplog.text
    assert program.detailed_results.best_score == 1.0


def test_lm_failure_during_scoring_counts_as_a_failure_never_as_correct(caplog):
    data = topic_examples(["guns", "taxes", "unions", "nukes", "zoos"], supported=set())  # every answer is "No"

    def respond(system, user):
        if "guns" in user:
            raise ConnectionError("endpoint down")
        return {"answer": "No"}

    flaky = rule_lm(respond, num_retries=0)
    with caplog.at_level(logging.WARNING, logger="fermi_dspy"):
        program = fermi(task_model=flaky, num_iterations=1).compile(OpinionQA(), trainset=data, profile={"A": "b"})
    best = program.detailed_results.memory[0]
    failed = [i for i, output in enumerate(best.outputs) if output.startswith("[error]")]
    assert failed and all(best.scores[i] == 0.0 for i in failed)  # the right answer was "No": never counted right
    result = program.detailed_results
    assert result.task_usage.failed_calls == len(failed) * result.num_candidates_scored  # one per candidate
    assert "LM call failed" in caplog.text


def test_an_lm_failing_on_every_first_round_call_is_a_clear_error():
    data = topic_examples(["guns"] * 5, supported=set())

    def respond(system, user):
        raise ConnectionError("endpoint down")

    with pytest.raises(RuntimeError, match=r"Every task-LM call of the first scoring round failed.*endpoint down"):
        fermi(task_model=rule_lm(respond, num_retries=0), num_iterations=1).compile(OpinionQA(), trainset=data,
                                                                                   profile={"A": "b"})


def test_patience_stops_early(examples):
    flat = rule_lm(lambda s, u: {"answer": "No"})
    program = fermi(task_model=flat, patience=1, num_iterations=6).compile(OpinionQA(), trainset=examples)
    assert program.detailed_results.stop_reason == "patience"
    assert len(program.detailed_results.iterations) == 2


def test_lm_call_budget_is_never_exceeded(examples):
    task, proposer = task_lm(), proposer_lm()
    optimizer = fermi(task_model=task, prompt_model=proposer, max_lm_calls=40, num_threads=1)
    program = optimizer.compile(OpinionQA(), trainset=examples, profile={"A": "b"})
    total = len(task.engine.calls) + len(proposer.engine.calls)
    result = program.detailed_results
    assert total <= 40
    assert result.task_usage.calls + result.proposer_usage.calls == total
    assert result.stop_reason in ("budget", "perfect")


def test_usage_counts_calls_and_tokens_per_role(examples):
    task, proposer = task_lm(), proposer_lm()
    program = fermi(task_model=task, prompt_model=proposer).compile(OpinionQA(), trainset=examples)
    result = program.detailed_results
    assert result.task_usage.calls == len(task.engine.calls) > 0
    assert result.proposer_usage.calls == len(proposer.engine.calls) > 0
    assert result.task_usage.prompt_tokens > 0 and result.proposer_usage.completion_tokens > 0
    assert result.num_candidates_scored * result.num_optimization_examples == result.task_usage.calls


def test_gepa_style_feedback_metric_reaches_the_proposer(examples):
    def metric(example, prediction, trace=None, pred_name=None, pred_trace=None):
        ok = prediction.answer == example.answer
        return dspy.Prediction(score=float(ok), feedback=f"FEEDBACK-{example.question[-6:-1]}")

    proposer = proposer_lm()
    fermi(metric=metric, prompt_model=proposer, num_iterations=2).compile(OpinionQA(), trainset=examples)
    assert any("Feedback on the best prompt's answer: FEEDBACK-" in c.user for c in proposer.engine.calls)


def test_custom_float_metric_is_used(examples):
    program = fermi(metric=lambda e, p, trace=None: 0.5, num_iterations=1).compile(OpinionQA(), trainset=examples)
    assert program.detailed_results.best_score == 0.5


def test_returned_program_is_a_personalized_dspy_module(examples):
    program = fermi().compile(OpinionQA(), trainset=examples, profile={"A": "b"})
    assert isinstance(program, PersonalizedProgram) and isinstance(program, dspy.Module)
    assert not any(p.lm for _, p in program.named_predictors())


def test_budget_holds_exactly_even_when_adapter_retries_add_calls(examples):
    """Every ChatAdapter parse failure makes a second (JSON) call; the cap still holds per call."""
    import json

    from fermi_dspy.testing import RuleEngine, wants_json

    class Flaky(RuleEngine):
        def complete(self, request):
            response = super().complete(request)
            if not wants_json(request, request.system or ""):  # break the ChatAdapter format
                from dspy.lm15 import Message, Response, TextPart

                return Response(id=None, model=request.model, message=Message.assistant([TextPart("garbled")]),
                                finish_reason="stop", usage=response.usage)
            return response

    from tests.scripted import task_respond

    task = dspy.LM("rule/flaky", engine=Flaky(task_respond), cache=False)
    proposer = proposer_lm()
    for cap in (23, 37, 50):
        task.engine.calls.clear()
        proposer.engine.calls.clear()
        program = fermi(task_model=task, prompt_model=proposer, max_lm_calls=cap, num_threads=2).compile(
            OpinionQA(), trainset=examples, profile={"A": "b"}
        )
        made = len(task.engine.calls) + len(proposer.engine.calls)
        assert made <= cap
        assert program.detailed_results.stop_reason == "budget"
        usage = program.detailed_results
        assert usage.task_usage.calls + usage.proposer_usage.calls == made
        json.dumps(usage.to_dict())
