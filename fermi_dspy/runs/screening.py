"""Screening the users of a run for bad records before anything is started."""

from collections.abc import Sequence
from typing import Any

from fermi_dspy.data import BadRecord, DataError
from fermi_dspy.data.problems import DUPLICATE_USER, INVALID_FIELD, NO_VALID_ANSWERS, format_problems
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


def bad_records_error(problems: list[BadRecord]) -> DataError:
    """The error that refuses a run whose input has bad records (`on_bad_record="raise"`)."""
    return DataError(
        f"{len(problems)} bad record(s) in the input; the run was not started:\n{format_problems(problems)}\n"
        "Fix them, or pass on_bad_record='skip' (--on-bad-record skip) to leave exactly these records out (they are "
        "then listed in input_problems.json and the summary).",
        problems,
    )


def problem_dict(problem: BadRecord) -> dict[str, Any]:
    """A bad record as JSON for input_problems.json."""
    return {"file": problem.file, "line": problem.line, "user_id": problem.user_id, "kind": problem.kind,
            "reason": problem.reason, "example_id": problem.example_id, "message": str(problem)}
