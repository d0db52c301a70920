"""A personalized program composes like any DSPy program (synthetic data, scripted LMs).

Inside a bigger program (a rewrite step, then the personalized answer), compiled by DSPy's own optimizers, the
personalized program keeps routing each query to the prompt that did best on the user's nearest questions; the
predictors that run are the ones DSPy's tools see (traces, demos, set_lm); async answers like forward; metrics of
every DSPy shape score the same.
"""

import asyncio
import importlib.util
import re

import dspy
import pytest

from fermi_dspy import Fermi, PersonalizedProgram, answer_accuracy
from fermi_dspy.lm.grammar import chat_adapter_fields
from fermi_dspy.programs import OpinionQA
from fermi_dspy.testing import rule_lm
from tests.test_selection import compile_pets, pets_examples, pets_lms

CATS = {"question": "Do you like cats in the street?", "options": ["Yes", "No"]}
DOGS = {"question": "Do you like dogs in the street?", "options": ["Yes", "No"]}


def _outputs(system: str, user: str) -> list[str]:
    asked = chat_adapter_fields(user)
    if asked:
        return [field.name for field in asked]
    return re.findall(r"^\d+\. `(\w+)`", system.split("Your output fields are:", 1)[-1].split("All interactions")[0],
                      re.M)


def any_task_respond(system: str, user: str) -> dict:
    """The pets task LM for the personalized step, an echo for the rewrite step, a stock reply for anything else
    (the signatures DSPy's optimizers use to propose instructions)."""
    fields = _outputs(system, user)
    if fields == ["answer"]:
        if "always says yes" in system:
            return {"answer": "Yes"}
        if "always says no" in system:
            return {"answer": "No"}
        return {"answer": "Unsure"}
    if fields == ["rewritten"]:
        questions = re.findall(r"\[\[ ## question ## \]\]\n(.*?)\n", user)  # demos come first; the query is last
        return {"rewritten": questions[-1] if questions else "?"}
    return dict.fromkeys(fields, "Answer the question.")


class Pipeline(dspy.Module):
    """A bigger program: rewrite the question, then answer it as the user would."""

    def __init__(self, personal: dspy.Module) -> None:
        super().__init__()
        self.rewrite = dspy.Predict("question -> rewritten")
        self.personal = personal

    def forward(self, question: str, options: list[str]) -> dspy.Prediction:
        return self.personal(question=self.rewrite(question=question).rewritten, options=options)


@pytest.fixture
def personal():
    program, _ = compile_pets()
    assert program.route(**CATS) != program.route(**DOGS)
    return program


@pytest.fixture
def lm():
    return rule_lm(any_task_respond, model="rule/any")


def assert_routes(pipeline: dspy.Module, lm: dspy.LM) -> None:
    inner = pipeline.personal
    yes, no = inner.prompts.index("This person always says yes."), inner.prompts.index("This person always says no.")
    assert inner.route(**CATS) == yes and inner.route(**DOGS) == no
    with dspy.context(lm=lm):
        assert pipeline(**CATS).answer == "Yes" and pipeline(**DOGS).answer == "No"


def test_reset_copy_keeps_the_prompts_and_the_routing_and_resets_demos(personal, lm):
    personal.program.predict.demos = [dspy.Example(question="q", options="A. x", answer="A")]
    reset = Pipeline(personal).reset_copy()
    assert reset.personal.prompts == personal.prompts and reset.personal.program.predict.demos == []
    assert_routes(reset, lm)


def test_routing_survives_bootstrap_fewshot_and_its_demos_reach_the_personalized_predictor(personal, lm):
    optimizer = dspy.BootstrapFewShot(metric=answer_accuracy, max_bootstrapped_demos=2, max_labeled_demos=0)
    with dspy.context(lm=lm):
        compiled = optimizer.compile(Pipeline(personal), trainset=pets_examples())
    assert_routes(compiled, lm)
    demos = dict(compiled.named_predictors())
    assert len(demos["rewrite"].demos) == 2
    assert len(demos["personal.program.predict"].demos) == 2  # before: 0, the trace named hidden copies


def test_routing_survives_labeled_fewshot(personal, lm):
    compiled = dspy.LabeledFewShot(k=2).compile(Pipeline(personal), trainset=pets_examples())
    assert len(compiled.personal.program.predict.demos) == 2
    assert_routes(compiled, lm)


@pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="MIPROv2 needs optuna: pip install optuna")
def test_routing_survives_miprov2_rewriting_the_task_instruction(personal, lm):
    optimizer = dspy.MIPROv2(metric=answer_accuracy, prompt_model=lm, task_model=lm, auto=None, num_candidates=2,
                             max_bootstrapped_demos=0, max_labeled_demos=0, num_threads=1, verbose=False)
    with dspy.context(lm=lm):
        compiled = optimizer.compile(Pipeline(personal), trainset=pets_examples(), num_trials=2, minibatch=False)
    assert_routes(compiled, lm)


def test_routing_survives_gepa_and_its_instruction_sits_after_the_personal_prompt(personal, lm):
    def feedback(gold, pred, trace, pred_name, pred_trace):
        right = answer_accuracy(gold, pred)
        return dspy.Prediction(score=right, feedback="right" if right else f"The person answered {gold.answer}.")

    reflection = rule_lm(lambda s, u: dict.fromkeys(_outputs(s, u), "Answer the question briefly."),
                         model="rule/reflection")
    optimizer = dspy.GEPA(metric=feedback, reflection_lm=reflection, max_metric_calls=40, num_threads=1,
                          track_stats=False)
    with dspy.context(lm=lm):
        compiled = optimizer.compile(Pipeline(personal), trainset=pets_examples(), valset=pets_examples()[:4])
    assert_routes(compiled, lm)
    seen = []
    traced = rule_lm(lambda s, u: (seen.append(s), any_task_respond(s, u))[1], model="rule/traced")
    with dspy.context(lm=traced):
        compiled(**CATS)
    base = compiled.personal.program.predict.signature.instructions
    assert "This person always says yes." in seen[-1] and base in seen[-1]
    assert seen[-1].index("This person always says yes.") < seen[-1].index(base)


def test_traces_name_the_programs_own_predictors(personal, lm):
    pipeline = Pipeline(personal)
    named = {id(predictor): name for name, predictor in pipeline.named_predictors()}
    with dspy.context(lm=lm, trace=[]):
        pipeline(**CATS)
        trace = list(dspy.settings.trace)
    assert [named.get(id(predictor)) for predictor, _, _ in trace] == ["rewrite", "personal.program.predict"]


def test_set_lm_and_demos_changed_after_a_first_call_take_effect(personal, lm):
    with dspy.context(lm=lm):
        personal(**CATS)
    other = rule_lm(any_task_respond, model="rule/other")
    personal.set_lm(other)
    personal.program.predict.demos = [dspy.Example(question="Do you like owls?", options="A. Yes\nB. No", answer="A")]
    with dspy.context(lm=lm):
        personal(**CATS)
    assert len(other.engine.calls) == 1  # before: the bound LM got 0 calls
    assert "Do you like owls?" in other.engine.calls[-1].user


def test_acall_routes_and_answers_like_forward(personal, lm):
    async def both():
        with dspy.context(lm=lm):
            return [(await personal.acall(**query)).answer for query in (CATS, DOGS)]

    with dspy.context(lm=lm):
        expected = [personal(**query).answer for query in (CATS, DOGS)]
    assert asyncio.run(both()) == expected == ["Yes", "No"]


def two(example, prediction):
    return answer_accuracy(example, prediction)


def three(example, prediction, trace):
    return answer_accuracy(example, prediction)


def five(gold, pred, trace, pred_name, pred_trace):
    return dspy.Prediction(score=answer_accuracy(gold, pred), feedback="fine")


@pytest.mark.parametrize("metric", [two, three, five, lambda example, prediction, trace=None: two(example, prediction)])
def test_two_three_and_five_argument_metrics_give_the_same_scores(metric):
    reference, _ = compile_pets()
    program, _ = compile_pets(metric=metric)
    def scores(compiled):
        return sorted((p.prompt, p.scores) for p in compiled.detailed_results.memory)

    assert scores(program) == scores(reference)


def test_a_metric_that_raises_on_every_example_is_a_clear_error_naming_it():
    def broken(example, prediction):
        raise KeyError("label")

    task, proposer = pets_lms()
    with pytest.raises(ValueError, match=r"metric 'broken' raised on every example.*KeyError"):
        Fermi(metric=broken, task_model=task, prompt_model=proposer, num_iterations=1,
              display_progress=False).compile(OpinionQA(), trainset=pets_examples(), profile={"Pets": "some"})


def test_a_metric_that_cannot_take_example_and_prediction_is_refused_before_any_call():
    with pytest.raises(TypeError, match="must take"):
        Fermi(metric=lambda example: 1.0)


def test_a_loaded_program_routes_inside_a_bigger_program(personal, lm, tmp_path):
    Pipeline(personal).save(str(tmp_path / "pipeline.json"))
    loaded = Pipeline(PersonalizedProgram(OpinionQA()))
    loaded.load(str(tmp_path / "pipeline.json"))
    assert_routes(loaded, lm)
