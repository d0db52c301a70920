"""Per-user metrics (multiple-choice accuracy, a GEPA-style feedback variant, the LM's probability of the user's
answer), and how Fermi calls any DSPy metric and reads what it returns.

A metric returns a number, a bool, or `dspy.Prediction(score=..., feedback=..., aligned=...)`:

* `score`: higher is better; it ranks prompts and fills Retrieval-of-Prompt's score matrix;
* `feedback`: text shown to the proposer with the example (GEPA's convention);
* `aligned`: whether the model's answer agrees with the user's. When given, an example is mis-aligned exactly when
  `aligned` is False; without it, when `score < misaligned_threshold` (the paper's tau). Soft scores (a probability,
  a distance) use it, so "mis-aligned" keeps meaning "the model answered otherwise than the person".
"""

import inspect
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dspy

logger = logging.getLogger(__name__)

from fermi_dspy.protocols import Metric  # noqa: E402 (the extension points are declared in one place)

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


def answer_probability(
    example: dspy.Example,
    prediction: Any,
    trace: Any = None,
    pred_name: str | None = None,
    pred_trace: Any = None,
) -> dspy.Prediction:
    """The LM's probability of the user's answer, a soft per-user score that moves before accuracy does.

    It reads `prediction.option_probs` (one probability per option, as `fermi_dspy.programs.OpinionQA` returns when
    its LM gives log-probabilities) and renormalizes them over the options. The example is aligned when the model's
    answer is the user's (its top choice, under greedy decoding). Fermi asks the task LM for log-probabilities when it
    optimizes this metric. Without probabilities it falls back to 0/1 accuracy, with one logged warning.
    """
    matched, expected, predicted = answers_match(example, prediction)
    probabilities = getattr(prediction, "option_probs", None) if prediction is not None else None
    options = example.get("options")
    index = option_index(expected, options) if isinstance(options, list | tuple) and options else None
    if not probabilities or index is None or len(probabilities) != len(options):
        _warn_once("answer_probability: the prediction has no option probabilities (the LM returned no "
                   "log-probabilities, or the student does not report `option_probs`); scoring 0/1 accuracy instead.")
        return dspy.Prediction(score=float(matched), aligned=matched,
                               feedback=answer_feedback(example, prediction).feedback)
    total = float(sum(probabilities))
    probability = float(probabilities[index]) / total if total > 0 else 0.0
    if matched:
        feedback = f"Correct: the person answered '{expected}' (the model gave it probability {probability:.2f})."
    else:
        feedback = (f"The person answered '{expected}', which the model gave probability {probability:.2f}; the model "
                    f"answered '{predicted or '(nothing)'}'.")
    return dspy.Prediction(score=probability, aligned=matched, feedback=feedback)


answer_probability.uses_logprobs = True  # type: ignore[attr-defined]

#: A predicted rating this many stars (or more) from the person's is mis-aligned (the rating task's tau).
MISALIGNED_STARS = 1.0
#: The widest possible error on MovieLens' 0.5-5 star scale.
RATING_RANGE = 4.5


def rating_score(
    example: dspy.Example,
    prediction: Any,
    trace: Any = None,
    pred_name: str | None = None,
    pred_trace: Any = None,
) -> dspy.Prediction:
    """A star rating's closeness to the person's: `score` = 1 - |error| / 4.5 (so ranking prompts by their mean
    score ranks them by mean absolute error), mis-aligned when the error is 1 star or more, with feedback such as
    "The person rated it 2, the model said 4.". A prediction without a number scores 0 and is mis-aligned."""
    gold = float(example.rating)
    try:
        predicted = float(getattr(prediction, "rating", None))
    except (TypeError, ValueError):
        return dspy.Prediction(score=0.0, aligned=False,
                               feedback=f"The person rated it {gold:g}; the model gave no rating.")
    error = abs(predicted - gold)
    feedback = (f"Close: the person rated it {gold:g}, the model said {predicted:g}." if error < MISALIGNED_STARS
                else f"The person rated it {gold:g}, the model said {predicted:g}.")
    return dspy.Prediction(score=max(0.0, 1.0 - error / RATING_RANGE), aligned=error < MISALIGNED_STARS,
                           feedback=feedback)


def rating_errors(golds: Sequence[float], predictions: Sequence[float]) -> tuple[float, float]:
    """(mean absolute error, root mean squared error) of one user's predicted ratings."""
    if not golds or len(golds) != len(predictions):
        raise ValueError(f"need as many predictions as ratings, got {len(predictions)} for {len(golds)}.")
    errors = [p - g for g, p in zip(golds, predictions, strict=True)]
    return sum(abs(e) for e in errors) / len(errors), math.sqrt(sum(e * e for e in errors) / len(errors))

_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


def uses_logprobs(metric: Metric | None) -> bool:
    """Whether a metric needs the task LM's log-probabilities (it says so with `metric.uses_logprobs = True`)."""
    return bool(getattr(metric, "uses_logprobs", False))


def metric_arity(metric: Metric) -> int:
    """How many positional arguments to call a metric with: 2 (DSPy's `Evaluate`), 3 (with `trace`) or 5 (GEPA's).

    Arguments with defaults are left to their defaults, as DSPy does; a metric whose first 3 or 5 parameters have no
    default gets `trace` (None), then GEPA's `pred_name` and `pred_trace` (None) too.

    Raises:
        TypeError: Not callable, or it cannot take (example, prediction) positionally, or needs more than 5 arguments.
    """
    if not callable(metric):
        raise TypeError(f"metric must be callable, got {type(metric).__name__}.")
    try:
        parameters = list(inspect.signature(metric).parameters.values())
    except (TypeError, ValueError):
        return 2
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    required = sum(1 for p in positional if p.default is p.empty)
    if len(positional) < 2 and not variadic:
        raise TypeError(
            f"metric {getattr(metric, '__name__', metric)!r} must take (example, prediction[, trace]) or GEPA's "
            "(gold, pred, trace, pred_name, pred_trace); it takes fewer positional arguments."
        )
    if required > 5:
        raise TypeError(f"metric {getattr(metric, '__name__', metric)!r} needs {required} positional arguments; "
                        "DSPy metrics take at most 5 (gold, pred, trace, pred_name, pred_trace).")
    return max(2, required)


def call_metric(metric: Metric, example: dspy.Example, prediction: Any, arity: int | None = None) -> Any:
    """Call a DSPy metric with the arguments it takes (see `metric_arity`)."""
    n = metric_arity(metric) if arity is None else arity
    return metric(*(example, prediction, None, None, None)[:n])


@dataclass(frozen=True)
class MetricResult:
    """A metric's output normalized to a score, optional feedback and an optional alignment flag."""

    score: float
    feedback: str | None = None
    aligned: bool | None = None


def normalize_metric_output(output: Any) -> MetricResult:
    """Turn a float, bool or `dspy.Prediction(score=..., feedback=..., aligned=...)` into a `MetricResult`.

    Raises:
        TypeError: The metric returned something that has no numeric score.
    """
    feedback = aligned = None
    score = output
    if isinstance(output, dspy.Prediction | dict):
        score = output.get("score")
        feedback = output.get("feedback")
        aligned = output.get("aligned")
    if isinstance(score, bool):
        score = float(score)
    if not isinstance(score, int | float) or math.isnan(float(score)):
        raise TypeError(
            f"The metric returned {output!r}; it must return a number, a bool, or dspy.Prediction(score=...)."
        )
    return MetricResult(float(score), None if feedback is None else str(feedback),
                        None if aligned is None else bool(aligned))
