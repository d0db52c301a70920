"""A real OpinionQA panelist from ../shared/data compiled end to end, with scripted LMs (no model needed)."""


import dspy
import pytest

from fermi_dspy import Fermi, PersonalizedProgram, answer_accuracy
from fermi_dspy.data import DataNotFoundError, load_users, split_user
from fermi_dspy.programs import OpinionQA
from fermi_dspy.testing import rule_lm, shown_options


@pytest.fixture(scope="module")
def panelist():
    try:
        users = load_users("panelists", limit=1)
    except DataNotFoundError as exc:
        pytest.skip(f"real data not available: {exc}")
    return users[0]


def options_in(user: str) -> list[str]:
    return shown_options(user)


def test_real_panelist_compiles_runs_saves_and_loads(panelist, tmp_path):
    split = split_user(panelist, n_train=12, n_test=10, seed=0)

    def task(system, user):
        # a prompt that says "prefers the last option" answers with the last option, else the first
        options = options_in(user)
        return {"answer": options[-2] if "last" in system and len(options) > 1 else options[0]}

    proposals = iter(["This person prefers the last option.", "Answer plainly."] * 20)
    task_lm = rule_lm(task, model="rule/task")
    proposer_lm = rule_lm(lambda s, u: {"new_prompt": next(proposals)}, model="rule/proposer")
    program = Fermi(task_model=task_lm, prompt_model=proposer_lm, num_iterations=2, num_candidates=2,
                    num_threads=2, display_progress=False).compile(
        OpinionQA(), trainset=split.train, profile=panelist.profile
    )
    result = program.detailed_results
    assert result.num_optimization_examples + result.num_demonstration_examples == 12
    initial = result.iterations[0].candidates[0].prompt
    assert f"- Political party: {panelist.profile['Political party']}" in initial  # readable profile
    assert all(f"- Age: {panelist.profile['Age']}" in c.user for c in proposer_lm.engine.calls)

    path = tmp_path / f"{panelist.user_id}.json"
    program.save(str(path))
    loaded = PersonalizedProgram(OpinionQA())
    loaded.load(str(path))
    with dspy.context(lm=task_lm):
        answers = [loaded(**e.inputs()).answer for e in split.test]
        again = [program(**e.inputs()).answer for e in split.test]
    assert answers == again
    assert all(a in e.options for a, e in zip(answers, split.test, strict=True))
    accuracy = sum(answer_accuracy(e, dspy.Prediction(answer=a)) for a, e in zip(answers, split.test, strict=True))
    assert 0 <= accuracy <= len(split.test)
