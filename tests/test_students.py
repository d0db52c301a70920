"""Fermi with dspy.Predict, dspy.ChainOfThought and a custom module holding several predictors."""

import dspy

from fermi_dspy import PersonalizedProgram
from fermi_dspy.testing import rule_lm
from tests.scripted import task_respond
from tests.test_optimizer import fermi

SIGNATURE = "question, options: list[str] -> answer"


def cot_task_lm():
    return rule_lm(lambda s, u: {"reasoning": "Thinking.", **task_respond(s, u)}, model="rule/cot")


def test_bare_predict_student(examples, tmp_path):
    program = fermi().compile(dspy.Predict(SIGNATURE), trainset=examples, profile={"A": "b"})
    assert program.detailed_results.best_score == 1.0
    assert [name for name, _ in program.named_predictors()] == ["program"]
    program.save(str(tmp_path / "p.json"))
    loaded = PersonalizedProgram(dspy.Predict(SIGNATURE))
    loaded.load(str(tmp_path / "p.json"))
    assert loaded.prompts == program.prompts


def test_chain_of_thought_student(examples):
    task = cot_task_lm()
    program = fermi(task_model=task).compile(dspy.ChainOfThought(SIGNATURE), trainset=examples, profile={"A": "b"})
    assert program.detailed_results.best_score == 1.0
    with dspy.context(lm=task):
        prediction = program(question="Do you support guns?", options=["Yes", "No"])
    assert prediction.answer == "Yes" and prediction.reasoning == "Thinking."


class TwoStep(dspy.Module):
    """Drafts an answer, then checks it: two predictors."""

    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question, options: list[str] -> answer")
        self.check = dspy.Predict("question, options: list[str], draft -> answer")

    def forward(self, question, options):
        draft = self.draft(question=question, options=options).answer
        return self.check(question=question, options=options, draft=draft)


def two_step_lm():
    calls = []

    def respond(system, user):
        calls.append(system)
        return task_respond(system, user)

    return rule_lm(respond, model="rule/two"), calls


def test_module_with_several_predictors_personalizes_all_of_them(examples):
    task, systems = two_step_lm()
    student = TwoStep()
    program = fermi(task_model=task, selection="best").compile(student, trainset=examples, profile={"A": "b"})
    assert set(program.router.base_instructions) == {"draft", "check"}
    best = program.prompts[0]
    systems.clear()
    with dspy.context(lm=task):
        program(**examples[0].inputs())
    draft, check = systems  # what the LM received: both predictors ran with the prompt before their instruction
    assert best in draft and best in check and student.check.signature.instructions in check
    # At rest the predictors keep their own instructions, and the student is untouched.
    instructions = {name: p.signature.instructions for name, p in program.named_predictors()}
    assert instructions["program.check"] == student.check.signature.instructions
    assert student.draft.signature.instructions == dspy.Predict(SIGNATURE).signature.instructions


def test_module_with_several_predictors_can_personalize_only_some(examples):
    task, systems = two_step_lm()
    student = TwoStep()
    program = fermi(task_model=task, predictors=["check"], selection="best").compile(student, trainset=examples,
                                                                                     profile={"A": "b"})
    assert set(program.router.base_instructions) == {"check"}
    systems.clear()
    with dspy.context(lm=task):
        program(**examples[0].inputs())
    draft, check = systems
    assert program.prompts[0] not in draft and program.prompts[0] in check
    assert program.detailed_results.best_score == 1.0
