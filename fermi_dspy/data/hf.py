"""Interop with Hugging Face `datasets`: one row per answer."""

import json
from collections.abc import Iterable
from typing import Any

from fermi_dspy.data.checks import InvalidItem, check_answer, check_options, check_profile
from fermi_dspy.data.problems import (
    DUPLICATE_EXAMPLE,
    INVALID_FIELD,
    MISSING_FIELD,
    BadRecord,
    DataError,
    format_problems,
)
from fermi_dspy.data.records import UserRecord, make_example

HF_FILE = "<datasets.Dataset>"
"""The `BadRecord.file` of problems found in a dataset; `line` is then the 1-based row."""


def _features(with_distribution: bool) -> Any:
    import datasets

    list_of = getattr(datasets, "List", None) or datasets.Sequence
    string = datasets.Value("string")
    features = {
        "user_id": string,
        "source": string,
        "example_id": string,
        "question": string,
        "options": list_of(string),
        "answer": string,
        "profile": string,
        "meta": string,
    }
    if with_distribution:
        features["distribution"] = list_of(datasets.Value("float64"))
    return datasets.Features(features)


def to_hf_dataset(records: Iterable[UserRecord]) -> Any:
    """Flatten users into a `datasets.Dataset` with one row per answer.

    Columns: user_id, source, example_id, question, options, answer, profile (JSON text, "null" for no profile),
    meta (JSON text) and, if any record has answer shares, distribution (list of floats, None where absent).

    Keep the result local (research/testing use): the OpinionQA terms forbid publishing a respondent's profile
    together with their answers, and GlobalOpinionQA is CC BY-NC-SA. Do not `push_to_hub` it.

    Args:
        records: The users (e.g. `load_users(...).records`).

    Returns:
        The dataset, users in order and each user's answers in order.
    """
    import datasets

    records = list(records)
    with_distribution = any(r.distributions is not None for r in records)
    columns: dict[str, list[Any]] = {name: [] for name in _features(with_distribution)}
    for record in records:
        profile = json.dumps(record.profile, ensure_ascii=False)
        meta = json.dumps(dict(record.meta), ensure_ascii=False)
        for example_id, example in zip(record.example_ids, record.examples, strict=True):
            columns["user_id"].append(record.user_id)
            columns["source"].append(record.source)
            columns["example_id"].append(example_id)
            columns["question"].append(example.question)
            columns["options"].append(list(example.options))
            columns["answer"].append(example.answer)
            columns["profile"].append(profile)
            columns["meta"].append(meta)
            if with_distribution:
                shares = (record.distributions or {}).get(example_id)
                columns["distribution"].append(list(shares) if shares is not None else None)
    return datasets.Dataset.from_dict(columns, features=_features(with_distribution))


def _profile(value: Any) -> dict[str, str] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidItem(INVALID_FIELD, f"profile is not valid JSON ({exc.msg})") from None
    return None if value is None else check_profile(value, "profile")


def records_from_hf_dataset(
    ds: Any,
    *,
    user_column: str = "user_id",
    question_column: str = "question",
    options_column: str = "options",
    answer_column: str = "answer",
    id_column: str | None = "example_id",
    profile_column: str | None = "profile",
    source: str = "hf",
) -> list[UserRecord]:
    """Group a one-row-per-answer dataset back into per-user records (the inverse of `to_hf_dataset`).

    Rows of a user need not be contiguous; users are in order of first appearance, answers in row order. The
    `source`, `meta` and `distribution` columns are used when present. Missing id column: ids are "0", "1", ...
    per user. Missing profile column: profiles are None. A user's profile is taken from their first row.

    Args:
        ds: A `datasets.Dataset` (or anything with `column_names` and iterable dict rows).
        user_column: Column with the user id.
        question_column: Column with the question text.
        options_column: Column with the list of options.
        answer_column: Column with the chosen option.
        id_column: Column with the example id, or None.
        profile_column: Column with the profile (JSON text or a dict), or None.
        source: Source name for rows without a "source" column.

    Returns:
        The users.

    Raises:
        DataError: Some rows are invalid (every bad row is listed with its 1-based row number).
    """
    columns = set(ds.column_names)
    for required in (user_column, question_column, options_column, answer_column):
        if required not in columns:
            raise DataError(f"dataset has no column {required!r}; its columns are {sorted(columns)}.")
    id_column = id_column if id_column in columns else None
    profile_column = profile_column if profile_column in columns else None

    users: dict[str, dict[str, Any]] = {}
    problems: list[BadRecord] = []
    for row_no, row in enumerate(ds, start=1):
        user_id = row[user_column]
        example_id = None
        try:
            if not isinstance(user_id, str) or not user_id:
                raise InvalidItem(MISSING_FIELD, f"{user_column!r} must be a non-empty string, got {user_id!r}")
            user = users.get(user_id)
            if user is None:
                meta = json.loads(row["meta"]) if isinstance(row.get("meta"), str) else {}
                user = users[user_id] = {
                    "profile": _profile(row[profile_column]) if profile_column else None,
                    "source": row.get("source") or source,
                    "meta": meta,
                    "examples": [],
                    "ids": {},
                    "distributions": {},
                }
            example_id = str(row[id_column]) if id_column else str(len(user["ids"]))
            if example_id in user["ids"]:
                raise InvalidItem(DUPLICATE_EXAMPLE, f"example id repeats row {user['ids'][example_id]}")
            question = row[question_column]
            if not isinstance(question, str) or not question.strip():
                raise InvalidItem(INVALID_FIELD, f"{question_column!r} must be a non-empty string")
            options = check_options(row[options_column], options_column)
            answer = check_answer(row[answer_column], options, key=answer_column)
        except (InvalidItem, json.JSONDecodeError) as exc:
            reason = exc.reason if isinstance(exc, InvalidItem) else f"meta is not valid JSON ({exc.msg})"
            kind = exc.kind if isinstance(exc, InvalidItem) else INVALID_FIELD
            owner = user_id if isinstance(user_id, str) else None
            problems.append(BadRecord(HF_FILE, row_no, owner, reason, kind, example_id))
            continue
        user["ids"][example_id] = row_no
        user["examples"].append(make_example(question, options, answer))
        shares = row.get("distribution")
        if shares is not None:
            user["distributions"][example_id] = tuple(float(x) for x in shares)
    if problems:
        raise DataError(f"{len(problems)} bad row(s) in the dataset:\n{format_problems(problems)}", problems)
    return [
        UserRecord(
            user_id=user_id,
            profile=user["profile"],
            examples=tuple(user["examples"]),
            example_ids=tuple(user["ids"]),
            source=user["source"],
            meta=user["meta"],
            distributions=user["distributions"] or None,
        )
        for user_id, user in users.items()
    ]
