"""Screening the users of a run for bad records before anything is started."""

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fermi_dspy.data import BadRecord, DataError
from fermi_dspy.data.problems import (
    DUPLICATE_USER,
    INVALID_FIELD,
    NO_VALID_ANSWERS,
    NULL_ANSWER,
    TOO_FEW_EXAMPLES,
    format_problems,
)
from fermi_dspy.runs.jobs import UserData, UserJob

#: Kind of a bad record for a user the job cannot run (its `check` gave the reason).
INVALID_USER = "invalid_user"


def screen_users(
    users: Sequence[UserData], job: UserJob, *, default_origin: str = "<users>"
) -> tuple[list[UserData], list[BadRecord]]:
    """Split users into those to run and bad records (duplicate ids, empty users, users the job cannot run).

    A bad record names the user's origin and its 1-based position among the given users as file and line.
    """
    kept: list[UserData] = []
    problems: list[BadRecord] = []
    first_seen: dict[str, int] = {}
    for position, user in enumerate(users, start=1):
        if not isinstance(user, UserData):
            problems.append(BadRecord(default_origin, position, None, f"not a UserData: {type(user).__name__}",
                                      INVALID_FIELD))
            continue
        origin = user.origin or default_origin
        if user.user_id in first_seen:
            problems.append(BadRecord(origin, position, user.user_id, f"duplicate user id; the first one (item "
                                      f"{first_seen[user.user_id]}) is kept", DUPLICATE_USER))
            continue
        first_seen[user.user_id] = position
        if not user.user_id or not isinstance(user.user_id, str):
            problems.append(BadRecord(origin, position, None, f"user id must be a non-empty string, got "
                                      f"{user.user_id!r}", INVALID_FIELD))
            continue
        if not user.train:
            problems.append(BadRecord(origin, position, user.user_id, "the user has no examples to learn from",
                                      NO_VALID_ANSWERS))
            continue
        reason = job.check(user)
        if reason:
            problems.append(BadRecord(origin, position, user.user_id, reason, INVALID_USER))
            continue
        kept.append(user)
    return kept, problems


def bad_records_error(problems: list[BadRecord], listed_in: Path | None = None) -> DataError:
    """The error that refuses a run whose input has bad records (`on_bad_record="raise"`).

    Args:
        problems: Every bad record.
        listed_in: The file that lists all of them (the message shows the first ones and names it).
    """
    where = f"; all {len(problems)} are listed in {listed_in}" if listed_in is not None else ""
    return DataError(
        f"{len(problems)} bad record(s) in the input; the run was not started{where}:\n{format_problems(problems)}\n"
        "Fix them, or pass on_bad_record='skip' (--on-bad-record skip) to leave exactly these records out (they are "
        "then listed in input_problems.json and the summary).",
        problems,
    )


def no_users_error(source_path: str | None, problems: Sequence[BadRecord], excluded: Sequence[BadRecord],
                   given: int) -> DataError:
    """The error that refuses a run with no user to run, saying why (an empty file, everything left out)."""
    where = f" in {source_path}" if source_path else ""
    if not given and not problems and not excluded:
        if source_path:
            return DataError(f"{source_path} holds no users: the file is empty. Point data_path (--data-path) at the "
                             "data file, or check how it was written.")
        return DataError("no users to run: none were given.")
    reasons = []
    kinds = Counter(p.kind for p in excluded)
    if kinds.get(TOO_FEW_EXAMPLES):
        reasons.append(f"{kinds[TOO_FEW_EXAMPLES]} with too few answers for the train/test split (lower n_train / "
                       "n_test, --train / --test)")
    if problems:
        reasons.append(f"{len(problems)} bad record(s)")
    others = sum(n for kind, n in kinds.items() if kind not in (TOO_FEW_EXAMPLES, NULL_ANSWER))
    if others:
        reasons.append(f"{others} left out on purpose")
    detail = "; ".join(reasons) or "the selection (e.g. limit=0 / --users 0) keeps none"
    return DataError(f"no users to run{where}: every user was left out ({detail}). See input_problems.json or the "
                     "log for each one.")


def problem_dict(problem: BadRecord) -> dict[str, Any]:
    """A bad record as JSON for input_problems.json."""
    return {"file": problem.file, "line": problem.line, "user_id": problem.user_id, "kind": problem.kind,
            "reason": problem.reason, "example_id": problem.example_id, "message": str(problem)}
