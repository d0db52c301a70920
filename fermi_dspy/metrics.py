"""Per-user metrics: multiple-choice answer accuracy, a GEPA-style feedback variant, and metric normalization."""

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dspy

Metric = Callable[..., Any]
"""A DSPy metric `(example, prediction, trace=None) -> float | bool | dspy.Prediction(score=..., feedback=...)`."""

_LETTER = re.compile(r"^\(?([a-z])\)?(?:[.):]\s*(.*))?$")
_EDGE_PUNCT = " \t\n\"'`.,;:!"


def normalize_answer(value: Any) -> str:
    """Lower-case, collapse whitespace and strip surrounding quotes and punctuation."""
    text = " ".join(str(value).split()).lower()
    return text.strip(_EDGE_PUNCT)


def option_index(value: Any, options: Sequence[Any]) -> int | None:
    """Find which option an answer names, by option text or by letter (case and whitespace do not matter).

    An answer written as a one-element list, ``["Not much"]`` (small models copy the format the options were shown
    in), names that element; a list of several options names none.

    Args:
        value: The answer, e.g. "Not much", " not MUCH ", "C", "(c)", "C. Not much", '["Not much"]'.
        options: The question's options, in order.

    Returns:
        The option's index, or None when the answer names no option.
    """
    if value is None:
        return None
    value = _single_list_element(value)
    text = normalize_answer(value)
    normalized = [normalize_answer(option) for option in options]
    if text in normalized:
        return normalized.index(text)
    match = _LETTER.match(text)
    if match:
        index = ord(match.group(1)) - ord("a")
        rest = match.group(2)
        if index < len(options) and (not rest or normalize_answer(rest) == normalized[index]):
            return index
    return None


def _single_list_element(value: Any) -> Any:
    """The element of a one-element list (or of its JSON text); anything else unchanged."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value.strip())
        except ValueError:
            return value
    if isinstance(value, list | tuple):
        return value[0] if len(value) == 1 else " | ".join(map(str, value))
    return value


def label_fields(example: dspy.Example) -> list[str]:
    """The example's label fields (every field that is not an input)."""
    return list(example.labels().keys())


def _answer_field(example: dspy.Example) -> str:
    labels = label_fields(example)
    if "answer" in labels:
        return "answer"
    if len(labels) == 1:
        return labels[0]
    raise ValueError(
        f"answer_accuracy needs one label field (or one named 'answer'); the example has labels {labels}. "
        "Pass your own metric to Fermi(metric=...)."
    )


def answers_match(example: dspy.Example, prediction: Any) -> tuple[bool, str, str]:
    """Compare the prediction's answer with the example's, as options when the example has `options`.

    Returns:
        (match, the user's answer, the model's answer).
    """
    field = _answer_field(example)
    expected = example[field]
    predicted = getattr(prediction, field, None) if prediction is not None else None
    options = example.get("options")
    if isinstance(options, list | tuple) and options:
        expected_index = option_index(expected, options)
        predicted_index = option_index(predicted, options)
        matched = expected_index is not None and expected_index == predicted_index
    else:
        matched = predicted is not None and normalize_answer(predicted) == normalize_answer(expected)
    return matched, str(expected), "" if predicted is None else str(predicted)


def answer_accuracy(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
    """Per-user accuracy for one answer: 1.0 when the model picked the user's option, else 0.0.

    A letter ("B") or the option's text both count; case and whitespace are ignored. Without `options` on the
    example, the normalized answer strings are compared.
    """
    return float(answers_match(example, prediction)[0])


def answer_feedback(
    example: dspy.Example,
    prediction: Any,
    trace: Any = None,
    pred_name: str | None = None,
    pred_trace: Any = None,
) -> dspy.Prediction:
    """`answer_accuracy` with textual feedback, usable by GEPA and by Fermi's proposer."""
    matched, expected, predicted = answers_match(example, prediction)
    if matched:
        feedback = f"Correct: the person answered '{expected}'."
    else:
        feedback = f"The person answered '{expected}', but the model answered '{predicted or '(nothing)'}'."
    return dspy.Prediction(score=float(matched), feedback=feedback)


@dataclass(frozen=True)
class MetricResult:
    """A metric's output normalized to a score and optional feedback."""

    score: float
    feedback: str | None = None


def normalize_metric_output(output: Any) -> MetricResult:
    """Turn a float, bool or `dspy.Prediction(score=..., feedback=...)` into a `MetricResult`.

    Raises:
        TypeError: The metric returned something that has no numeric score.
    """
    feedback = None
    score = output
    if isinstance(output, dspy.Prediction | dict):
        score = output.get("score")
        feedback = output.get("feedback")
    if isinstance(score, bool):
        score = float(score)
    if not isinstance(score, int | float) or math.isnan(float(score)):
        raise TypeError(
            f"The metric returned {output!r}; it must return a number, a bool, or dspy.Prediction(score=...)."
        )
    return MetricResult(float(score), None if feedback is None else str(feedback))
