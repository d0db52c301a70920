"""OpinionQA loaders: Pew ATP panelists (AlphaEdit join) and Hwang et al. 2023 per-topic user records."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fermi_dspy.data.builder import FileReport, UserBuilder
from fermi_dspy.data.checks import (
    InvalidItem,
    check_answer,
    check_answer_index,
    check_options,
    check_profile,
    require,
    require_id,
    require_list,
    require_str,
)
from fermi_dspy.data.jsonl import iter_jsonl
from fermi_dspy.data.problems import INVALID_FIELD, BadRecord, short_repr
from fermi_dspy.data.records import slugify

PANELISTS = "opinionqa_panelists"
HWANG = "opinionqa_hwang"
PANELISTS_FILE = "opinionqa/alphaedit_users/users.jsonl"
HWANG_FILE = "opinionqa/hwang2023_subset/records.jsonl"

REFUSED = "Refused"
"""OpinionQA's non-answer option (the last option of most questions)."""


def _add_answers(report: FileReport, user: UserBuilder, line: int, answers: list[Any], *, drop_refused: bool) -> None:
    for position, raw in enumerate(answers, start=1):
        user.n_seen += 1
        example_id = None
        try:
            if not isinstance(raw, dict):
                raise InvalidItem(INVALID_FIELD, f"answer #{position} is not a JSON object: {short_repr(raw, 80)}")
            example_id = require_str(raw, "qid")
            question = require_str(raw, "question")
            options = check_options(require(raw, "options"))
            letter = raw.get("answer_letter")
            null_note = f"; the source has answer_letter={short_repr(letter, 80)}" if letter is not None else ""
            answer = check_answer(raw.get("answer"), options, null_note=null_note)
            check_answer_index(raw.get("answer_index"), options, answer)
        except InvalidItem as exc:
            reason = exc.reason if example_id is not None else f"answer #{position}: {exc.reason}"
            report.problem(line, user.user_id, exc.kind, reason + "; answer left out", example_id)
            continue
        if drop_refused and answer == REFUSED:
            user.n_refused += 1
            continue
        report.add_answer(user, line, example_id, question, options, answer)


def _read(
    path: Path,
    source: str,
    user_id_of: Callable[[dict[str, Any]], str],
    parse_user: Callable[[dict[str, Any]], tuple[dict[str, str], dict[str, Any]]],
    *,
    drop_refused: bool,
) -> FileReport:
    report = FileReport(path, source)
    for line, obj in iter_jsonl(path):
        if isinstance(obj, BadRecord):
            report.add_problem(obj)
            continue
        user_id = None
        try:
            user_id = user_id_of(obj)
            profile, meta = parse_user(obj)
            answers = require_list(obj, "answers")
        except InvalidItem as exc:
            report.problem(line, user_id, exc.kind, exc.reason + "; record left out")
            continue
        user = UserBuilder(user_id, profile, line, meta=meta)
        if report.new_user(user):
            _add_answers(report, user, line, answers, drop_refused=drop_refused)
    return report.finish(repr(REFUSED))


def _panelist_id(obj: dict[str, Any]) -> str:
    return require_id(obj, "user_id")


# OpinionQA's 12 attribute codes and the names the OpinionQA paper gives them (readable for an LM).
ATTRIBUTE_NAMES = {
    "CREGION": "Region",
    "AGE": "Age",
    "SEX": "Sex",
    "EDUCATION": "Education",
    "CITIZEN": "US citizen",
    "MARITAL": "Marital status",
    "RELIG": "Religion",
    "RELIGATTEND": "Religious attendance",
    "POLPARTY": "Political party",
    "INCOME": "Income",
    "POLIDEOLOGY": "Political ideology",
    "RACE": "Race",
}


def _panelist(obj: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    # `qkey` (the ATP respondent key) and `profile_extra` are not carried over: the user id suffices, and Pew's terms
    # ask for no re-identification attempts. Attribute codes become their readable names.
    profile = check_profile(require(obj, "profile"), "profile")
    return {ATTRIBUTE_NAMES.get(key, key): value for key, value in profile.items()}, {}


def _hwang_id(obj: dict[str, Any]) -> str:
    return hwang_user_id(require_str(obj, "topic"), require_id(obj, "hwang_user_id"))


def _hwang(obj: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    profile = check_profile(require(obj, "profile_partial"), "profile_partial")
    meta = {"topic": obj["topic"], "hwang_user_id": obj["hwang_user_id"]}
    if obj.get("wave") is not None:
        meta["wave"] = obj["wave"]
    return profile, meta


def hwang_user_id(topic: str, hwang_id: str | int) -> str:
    """The user id of a Hwang et al. record: topic slug + Hwang's user id, e.g. "guns-53"."""
    return f"{slugify(topic)}-{hwang_id}"


def read_panelists(path: Path, *, drop_refused: bool = False) -> FileReport:
    """Read the OpinionQA panelists file (one panelist per line, 12-attribute profile, ~1000 answers).

    Args:
        path: The `users.jsonl` file.
        drop_refused: Leave out answers that are "Refused" (the option stays among the options of other questions).

    Returns:
        The report with the records, problems and exclusions.
    """
    return _read(path, PANELISTS, _panelist_id, _panelist, drop_refused=drop_refused)


def read_hwang(path: Path, *, drop_refused: bool = False) -> FileReport:
    """Read the Hwang et al. 2023 records (one user x topic per line, party/ideology profile, 30 answers).

    Args:
        path: The `records.jsonl` file.
        drop_refused: Leave out answers that are "Refused".

    Returns:
        The report with the records, problems and exclusions.
    """
    return _read(path, HWANG, _hwang_id, _hwang, drop_refused=drop_refused)
