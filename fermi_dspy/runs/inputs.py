"""Turn what a caller passes as users (a data set name, `LoadedUsers`, `UserRecord`s or `UserData`) into the
`UserData` a run executes, with the data source and every problem found on the way."""

from collections.abc import Sequence
from pathlib import Path

from fermi_dspy.data import BadRecord, LoadedUsers, UserRecord, load_users, split_user
from fermi_dspy.data.problems import NO_VALID_ANSWERS, TOO_FEW_EXAMPLES
from fermi_dspy.files import sha256_file
from fermi_dspy.runs.jobs import UserData
from fermi_dspy.runs.settings import BadRecordPolicy, DataSource

UsersInput = str | LoadedUsers | Sequence[UserRecord] | Sequence[UserData]


def split_records(
    records: Sequence[UserRecord], *, n_train: int | float | None, n_test: int | None, seed: int,
    origin: str = "<records>",
) -> tuple[list[UserData], list[BadRecord], list[BadRecord]]:
    """Split each record into train/test (`split_user`, seeded).

    Returns:
        (users, bad records: users with no examples, left out: users with too few examples for the split).
    """
    users: list[UserData] = []
    problems: list[BadRecord] = []
    excluded: list[BadRecord] = []
    for position, record in enumerate(records, start=1):
        if not isinstance(record, UserRecord):
            users.append(record)  # a UserData (or anything else: the run's screening reports it)
            continue
        if len(record) == 0:
            problems.append(BadRecord(origin, position, record.user_id, "the user has no answers", NO_VALID_ANSWERS))
            continue
        try:
            split = split_user(record, n_train=n_train, n_test=n_test, seed=seed)
        except ValueError as exc:
            excluded.append(BadRecord(origin, position, record.user_id, f"{exc}; user left out", TOO_FEW_EXAMPLES))
            continue
        users.append(UserData(record.user_id, split.train, split.test, record.profile, origin))
    return users, problems, excluded


def prepare_users(
    users: UsersInput,
    *,
    data_path: str | Path | None = None,
    on_bad_record: BadRecordPolicy = "raise",
    limit: int | None = None,
    n_train: int | float | None = 10,
    n_test: int | None = 20,
    seed: int = 0,
) -> tuple[list[UserData], DataSource]:
    """The run's users and their data source.

    Args:
        users: A data set name for `fermi_dspy.data.load_users` ("panelists", "hwang", "global"), a `LoadedUsers`,
            `UserRecord`s (split here with `split_user`), or ready `UserData` (used as given).
        data_path: The data file or folder, with a data set name.
        on_bad_record: "raise" (the run refuses a file with bad records, listing file and line of each) or "skip"
            (left out and listed). Either way the file's bad records come back in `DataSource.problems`, every one
            of them: the run applies the policy (`run_user_jobs`), so it can write the complete list. A null answer
            (no recorded choice) is not a bad record: it is left out with a warning and listed in
            `DataSource.excluded`.
        limit: Use only the first `limit` users.
        n_train: Train examples per user (int, a fraction of the user's examples, or None: every answer not held
            out).
        n_test: Test examples per user (None: all the rest).
        seed: Seeds the split.

    Raises:
        DataError: The data file cannot be found or read.
        ValueError: An unknown data set or policy.
    """
    if on_bad_record not in ("raise", "skip"):
        raise ValueError(f"on_bad_record={on_bad_record!r}; use 'raise' or 'skip'.")
    split = {"n_train": n_train, "n_test": n_test}
    if isinstance(users, str):
        fixed = isinstance(n_train, int) and not isinstance(n_train, bool) and isinstance(n_test, int)
        users = load_users(users, data_path, on_bad_record="collect", limit=limit, null_answers="skip",
                           min_examples=max(1, n_train + n_test) if fixed else 1)
        limit = None
    if isinstance(users, LoadedUsers):
        records = users.records[:limit] if limit is not None else users.records
        prepared, problems, excluded = split_records(records, n_train=n_train, n_test=n_test, seed=seed,
                                                     origin=users.path.name)
        return prepared, DataSource(users.dataset, str(users.path), sha256_file(users.path), split,
                                    [*users.problems, *problems], [*users.excluded, *excluded])
    items = list(users)[:limit] if limit is not None else list(users)
    if all(isinstance(u, UserData) for u in items):
        return items, DataSource()
    prepared, problems, excluded = split_records(items, n_train=n_train, n_test=n_test, seed=seed)
    return prepared, DataSource(split=split, problems=problems, excluded=excluded)
