"""GlobalOpinionQA loader: each country is a user whose answer is its most chosen option."""

import hashlib
import math
from pathlib import Path
from typing import Any

from fermi_dspy.data.builder import FileReport, UserBuilder
from fermi_dspy.data.checks import InvalidItem, check_answer, check_options, require, require_str
from fermi_dspy.data.jsonl import iter_jsonl
from fermi_dspy.data.problems import DUPLICATE_USER, INCONSISTENT_ANSWER, INVALID_FIELD, BadRecord, short_repr
from fermi_dspy.data.records import slugify

GLOBAL = "globalopinionqa"
GLOBAL_FILE = "globalopinionqa/country_question_distributions.jsonl"

NON_ANSWERS = frozenset(
    {
        "refused",
        "dk/refused",
        "don't know",
        "don't know/refused",
        "no answer",
        "no answer/refused",
    }
)
"""Options (lower-cased) that are no opinion; also every option starting with "missing"."""

_TOLERANCE = 1e-9


def is_non_answer(option: str) -> bool:
    """True for GlobalOpinionQA's "don't know / refused / no answer / missing" options."""
    text = option.strip().lower()
    return text in NON_ANSWERS or text.startswith("missing")


def question_id(question: str, options: list[str]) -> str:
    """A stable id for a question and its options (the same for every country asked it)."""
    digest = hashlib.sha1("\x1f".join([question, *options]).encode("utf-8")).hexdigest()
    return f"goqa-{digest[:12]}"


def country_user_id(country: str) -> str:
    """The user id of a country: its slug, e.g. "United States" -> "united-states"."""
    return slugify(country)


def _check_distribution(value: Any, options: list[str], answer: str) -> list[float] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != len(options)
        or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x >= 0 for x in value
        )
    ):
        raise InvalidItem(
            INVALID_FIELD,
            f"'distribution' must be {len(options)} non-negative numbers (one per option), got {short_repr(value)}",
        )
    share = value[options.index(answer)]
    if share < max(value) - _TOLERANCE:
        raise InvalidItem(
            INCONSISTENT_ANSWER,
            f"argmax_option {answer!r} has share {share} but {options[value.index(max(value))]!r} has {max(value)}",
        )
    return [float(x) for x in value]


def _country(report: FileReport, names: dict[str, str], country: str, line: int) -> UserBuilder:
    user_id = country_user_id(country)
    if names.setdefault(user_id, country) != country:
        raise InvalidItem(DUPLICATE_USER, f"country {country!r} has the same user id as {names[user_id]!r}")
    user = report.users.get(user_id)
    if user is None:
        user = UserBuilder(user_id, {"Country": country}, line, meta={"country": country}, with_distributions=True)
        report.new_user(user)
    return user


def read_globalopinionqa(path: Path, *, drop_refused: bool = False) -> FileReport:
    """Read GlobalOpinionQA (country, question) rows and group them into one user per country.

    Each country's profile is {"Country": <name>}; the label of a question is the country's most chosen option
    (`argmax_option`); the answer shares are kept in `UserRecord.distributions`.

    Args:
        path: The `country_question_distributions.jsonl` file.
        drop_refused: Leave out questions whose most chosen option is a non-answer ("DK/Refused", "Don't know", ...).

    Returns:
        The report with the records, problems and exclusions.
    """
    report = FileReport(path, GLOBAL)
    names: dict[str, str] = {}
    for line, obj in iter_jsonl(path):
        if isinstance(obj, BadRecord):
            report.add_problem(obj)
            continue
        user: UserBuilder | None = None
        example_id = None
        try:
            country = require_str(obj, "country")
            user = _country(report, names, country, line)
            user.n_seen += 1
            question = require_str(obj, "question")
            options = check_options(require(obj, "options"))
            example_id = question_id(question, options)
            answer = check_answer(obj.get("argmax_option"), options, key="argmax_option")
            distribution = _check_distribution(obj.get("distribution"), options, answer)
        except InvalidItem as exc:
            raw_country = obj.get("country")
            user_id = user.user_id if user is not None else None
            if user_id is None and isinstance(raw_country, str) and raw_country.strip():
                user_id = country_user_id(raw_country)
            report.problem(line, user_id, exc.kind, exc.reason + "; row left out", example_id)
            continue
        if drop_refused and is_non_answer(answer):
            user.n_refused += 1
            continue
        report.add_answer(user, line, example_id, question, options, answer, distribution=distribution)
    return report.finish("non-answer ('DK/Refused', \"Don't know\", ...)")
