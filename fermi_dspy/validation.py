"""Checks on a user's data that run before any LM call, with errors that name the record and the fix."""

import inspect
from collections.abc import Sequence

import dspy

from fermi_dspy.metrics import label_fields, option_index

MIN_TRAINSET_SIZE = 2


def _describe(name: str, index: int, example: dspy.Example) -> str:
    preview = ""
    for key in ("question", "query", "input", "text", "title"):
        if key in example:
            preview = f" ({key}={str(example[key])[:60]!r})"
            break
    return f"{name}[{index}]{preview}"


def required_inputs(student: dspy.Module) -> set[str] | None:
    """The input fields a student's `forward` needs, or None when they cannot be known.

    A bare predictor needs its signature's inputs; a module with named `forward` parameters needs the ones without
    defaults; a module whose `forward` takes only `**kwargs` and holds one predictor needs that predictor's inputs.
    """
    if isinstance(student, dspy.Predict):
        return set(student.signature.input_fields)
    parameters = list(inspect.signature(type(student).forward).parameters.values())[1:]  # without self
    named = [p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if named:
        return {p.name for p in named if p.default is p.empty}
    predictors = student.predictors()
    if len(predictors) == 1:
        return set(predictors[0].signature.input_fields)
    return None


def validate_examples(
    examples: Sequence[dspy.Example],
    *,
    name: str,
    student: dspy.Module,
    min_size: int = 0,
    check_answers: bool = True,
) -> None:
    """Check a user's examples before any LM call.

    Args:
        examples: The examples (one user's).
        name: What to call them in errors ("trainset", "valset").
        student: The program they will be fed to.
        min_size: The fewest examples accepted.
        check_answers: Also require a label and, for multiple choice (an `options` input), that the answer (the
            label "answer", or the only label, e.g. "tag") is among the options. Examples without options (e.g. a
            star `rating`) need only a label.

    Raises:
        TypeError: Not a list of dspy.Example.
        ValueError: Too few examples, inputs not marked, inputs missing, or an answer that is not an option.
    """
    if isinstance(examples, dspy.Example) or not isinstance(examples, Sequence):
        raise TypeError(f"{name} must be a list of dspy.Example, got {type(examples).__name__}.")
    if len(examples) < min_size:
        raise ValueError(
            f"{name} has {len(examples)} example(s); Fermi needs at least {min_size} of this user's answers "
            "(some to score prompts, some to show the proposer). Collect more answers for this user."
        )
    required = required_inputs(student)
    for index, example in enumerate(examples):
        where = _describe(name, index, example)
        if not isinstance(example, dspy.Example):
            raise TypeError(f"{name}[{index}] is a {type(example).__name__}, not a dspy.Example.")
        if example._input_keys is None:
            raise ValueError(
                f"{where} has no input fields marked. Mark them, e.g. "
                "dspy.Example(question=..., options=..., answer=...).with_inputs('question', 'options')."
            )
        missing = sorted((required or set()) - set(example.inputs().keys()))
        if missing:
            raise ValueError(
                f"{where} is missing the student's input field(s) {missing}; it has inputs "
                f"{sorted(example.inputs().keys())}. Add them and list them in .with_inputs(...)."
            )
        if not check_answers:
            continue
        labels = label_fields(example)
        if not labels:
            raise ValueError(f"{where} has no label (the user's answer); add e.g. answer=... that is not an input.")
        options = example.get("options")
        # The label compared with the options is the metrics' answer field: "answer", or the only label (e.g. "tag").
        field = "answer" if "answer" in labels else labels[0] if len(labels) == 1 else None
        answer = example.get(field) if field is not None else None
        if isinstance(options, list | tuple) and options and answer is not None:
            if option_index(answer, options) is None:
                raise ValueError(
                    f"{where}: {field} {answer!r} is not among its options {list(options)}. "
                    f"Fix the record (the {field} must be one of the options or its letter) or drop it."
                )
