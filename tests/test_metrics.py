"""Per-user multiple-choice accuracy and metric normalization."""

import dspy
import pytest

from fermi_dspy import answer_accuracy, answer_feedback, option_index
from fermi_dspy.metrics import normalize_metric_output

OPTIONS = ["A lot", "Some", "Not much", "Not at all", "Refused"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("Not much", 2), (" not   MUCH ", 2), ("not much.", 2), ("C", 2), ("c", 2), ("(C)", 2), ("C.", 2),
     ("C. Not much", 2), ("C) not much", 2), ("A lot", 0), ("a", 0), ("Z", None), ("Maybe", None), (None, None),
     ("C. Some", None), ('"Refused"', 4), ('["Not much"]', 2), ('[ "not much" ]', 2), (["Some"], 1),
     ('["Some", "Not much"]', None), ('["Some"', None)],
)
def test_option_index(value, expected):
    assert option_index(value, OPTIONS) == expected


def example(answer="Not much", **extra):
    return dspy.Example(question="q", options=OPTIONS, answer=answer, **extra).with_inputs("question", "options")


@pytest.mark.parametrize(("predicted", "score"), [("Not much", 1.0), ("c", 1.0), ("Some", 0.0), ("", 0.0),
                                                  (None, 0.0)])
def test_answer_accuracy(predicted, score):
    assert answer_accuracy(example(), dspy.Prediction(answer=predicted)) == score


def test_answer_given_as_letter_in_the_data_counts_too():
    assert answer_accuracy(example("C"), dspy.Prediction(answer="Not much")) == 1.0


def test_free_text_answers_without_options():
    free = dspy.Example(question="q", answer="Paris").with_inputs("question")
    assert answer_accuracy(free, dspy.Prediction(answer=" paris ")) == 1.0
    assert answer_accuracy(free, dspy.Prediction(answer="Lyon")) == 0.0


def test_several_labels_need_a_custom_metric():
    two = dspy.Example(question="q", reason="r", verdict="v").with_inputs("question")
    with pytest.raises(ValueError, match="Pass your own metric"):
        answer_accuracy(two, dspy.Prediction(reason="r", verdict="v"))


def test_feedback_metric_is_gepa_compatible():
    result = answer_feedback(example(), dspy.Prediction(answer="Some"), None, None, None)
    assert result.score == 0.0 and "answered 'Not much'" in result.feedback and "'Some'" in result.feedback
    assert answer_feedback(example(), dspy.Prediction(answer="C")).score == 1.0


@pytest.mark.parametrize(("raw", "score", "feedback"), [(True, 1.0, None), (0, 0.0, None), (0.25, 0.25, None),
                                                        (dspy.Prediction(score=0.5, feedback="f"), 0.5, "f")])
def test_normalize_metric_output(raw, score, feedback):
    result = normalize_metric_output(raw)
    assert (result.score, result.feedback) == (score, feedback)


@pytest.mark.parametrize("raw", [None, "yes", float("nan"), dspy.Prediction(feedback="no score")])
def test_metric_without_a_number_is_an_error(raw):
    with pytest.raises(TypeError, match="must return a number"):
        normalize_metric_output(raw)
