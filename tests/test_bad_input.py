"""Bad input gets a clear error naming the record and the fix, before any LM call."""

import dspy
import pytest

from fermi_dspy import Fermi
from fermi_dspy.programs import OpinionQA
from tests.scripted import proposer_lm, task_lm, topic_examples


@pytest.fixture
def lms():
    return task_lm(), proposer_lm()


def compile_with(lms, trainset, **kwargs):
    task, proposer = lms
    optimizer = Fermi(task_model=task, prompt_model=proposer, num_iterations=1, display_progress=False)
    return optimizer.compile(kwargs.pop("student", OpinionQA()), trainset=trainset, **kwargs)


def assert_no_lm_call(lms):
    assert not lms[0].engine.calls and not lms[1].engine.calls


@pytest.mark.parametrize("size", [0, 1])
def test_empty_or_one_example_trainset(lms, size):
    with pytest.raises(ValueError, match=rf"trainset has {size} example\(s\); Fermi needs at least 2"):
        compile_with(lms, topic_examples(["guns"] * size, set()))
    assert_no_lm_call(lms)


def test_trainset_not_a_list(lms):
    with pytest.raises(TypeError, match=r"trainset must be a list of dspy\.Example"):
        compile_with(lms, dspy.Example(question="q"))


def test_example_without_marked_inputs(lms):
    data = topic_examples(["guns", "taxes"], set())
    data[1] = dspy.Example(question="Do you support taxes?", options=["Yes", "No"], answer="No")
    with pytest.raises(ValueError, match=r"trainset\[1\] \(question='Do you support taxes\?'\) has no input fields"):
        compile_with(lms, data)
    assert_no_lm_call(lms)


def test_example_missing_an_input_field(lms):
    data = topic_examples(["guns", "taxes"], set())
    data[0] = dspy.Example(question="Do you support guns?", answer="No").with_inputs("question")
    with pytest.raises(ValueError, match=r"trainset\[0\].*missing the student's input field\(s\) \['options'\]"):
        compile_with(lms, data)
    assert_no_lm_call(lms)


def test_answer_not_among_its_options(lms):
    data = topic_examples(["guns", "taxes", "zoos"], set())
    data[2] = dspy.Example(question="Do you support zoos?", options=["Yes", "No"], answer="Maybe").with_inputs(
        "question", "options"
    )
    with pytest.raises(ValueError, match=r"trainset\[2\].*answer 'Maybe' is not among its options \['Yes', 'No'\]"):
        compile_with(lms, data)
    assert_no_lm_call(lms)


def test_answer_given_as_a_letter_is_accepted(lms):
    data = topic_examples(["guns", "taxes"], set())
    data[0] = dspy.Example(question="Do you support guns?", options=["Yes", "No"], answer="B").with_inputs(
        "question", "options"
    )
    compile_with(lms, data)


def test_example_without_a_label(lms):
    data = topic_examples(["guns", "taxes"], set())
    data[0] = dspy.Example(question="Do you support guns?", options=["Yes", "No"]).with_inputs("question", "options")
    with pytest.raises(ValueError, match=r"trainset\[0\].*has no label"):
        compile_with(lms, data)


def test_only_label_not_among_its_options(lms):
    """Without an `answer` field, the only label (here `tag`) is the one checked against the options."""
    student = dspy.Predict("title, options: list[str] -> tag")
    data = [dspy.Example(title=f"Film {i}", options=["comedy", "action"], tag=tag).with_inputs("title", "options")
            for i, tag in enumerate(["comedy", "action", "horror"])]
    with pytest.raises(ValueError, match=r"trainset\[2\] \(title='Film 2'\): tag 'horror' is not among its options"):
        compile_with(lms, data, student=student)
    assert_no_lm_call(lms)


@pytest.mark.parametrize("profile", [42, ["Age", "65+"], {"Age": {"min": 65}}, {1: "x"}])
def test_profile_of_the_wrong_type(lms, profile):
    with pytest.raises(TypeError, match="profile"):
        compile_with(lms, topic_examples(["guns", "taxes"], set()), profile=profile)
    assert_no_lm_call(lms)


def test_unknown_selection_mode():
    with pytest.raises(ValueError, match=r"selection='nearest' is not a selection mode; use 'retrieval'"):
        Fermi(selection="nearest")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_iterations": 0}, "num_iterations must be an integer >= 1"),
        ({"memory_size": 0}, "memory_size must be an integer >= 1"),
        ({"demo_fraction": 1.0}, r"demo_fraction must be in \[0, 1\)"),
        ({"feedback": "both"}, "feedback='both'"),
    ],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Fermi(**kwargs)


def test_unknown_predictor_name(lms):
    with pytest.raises(ValueError, match=r"predictors=\['nope'\] are not in the student"):
        task, proposer = lms
        Fermi(task_model=task, prompt_model=proposer, predictors=["nope"]).compile(
            OpinionQA(), trainset=topic_examples(["guns", "taxes"], set())
        )


def test_student_that_is_not_a_module(lms):
    with pytest.raises(TypeError, match=r"student must be a dspy\.Module"):
        compile_with(lms, topic_examples(["guns", "taxes"], set()), student=lambda **kw: None)


def test_bad_valset_is_named_valset(lms):
    valset = [dspy.Example(question="q", options=["Yes"], answer="No").with_inputs("question", "options")]
    with pytest.raises(ValueError, match=r"valset\[0\].*answer 'No' is not among its options"):
        compile_with(lms, topic_examples(["guns", "taxes"], set()), valset=valset)


def test_proposer_signature_with_unknown_inputs():
    class Bad(dspy.Signature):
        """x"""

        history: str = dspy.InputField()
        new_prompt: str = dspy.OutputField()

    with pytest.raises(ValueError, match=r"input field\(s\) \['history'\] that Fermi cannot fill"):
        Fermi(proposer_signature=Bad)
