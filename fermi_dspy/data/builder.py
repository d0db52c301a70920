"""Collecting one file's users and problems: the shared bookkeeping of the loaders."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dspy

from fermi_dspy.data.problems import (
    DUPLICATE_EXAMPLE,
    DUPLICATE_USER,
    NO_VALID_ANSWERS,
    REFUSED_DROPPED,
    BadRecord,
)
from fermi_dspy.data.records import UserRecord, make_example


class UserBuilder:
    """Accumulates one user's valid answers while a file is read."""

    def __init__(
        self,
        user_id: str,
        profile: dict[str, str] | None,
        line: int,
        *,
        meta: Mapping[str, Any] | None = None,
        with_distributions: bool = False,
    ) -> None:
        self.user_id = user_id
        self.profile = profile
        self.line = line
        self.meta = dict(meta or {})
        self.examples: list[dspy.Example] = []
        self.example_ids: list[str] = []
        self.id_lines: dict[str, int] = {}
        self.distributions: dict[str, tuple[float, ...]] | None = {} if with_distributions else None
        self.n_seen = 0
        self.n_refused = 0

    def build(self, source: str) -> UserRecord:
        """Freeze the accumulated answers into a `UserRecord`."""
        return UserRecord(
            user_id=self.user_id,
            profile=self.profile,
            examples=tuple(self.examples),
            example_ids=tuple(self.example_ids),
            source=source,
            meta=self.meta,
            distributions=self.distributions,
        )


class FileReport:
    """What reading one file found: its users, problems and exclusions, in file order.

    Attributes:
        path: The file.
        source: The data set name given to each record.
        records: The users (filled by `finish`).
        problems: Bad records/answers.
        excluded: Valid data left out on purpose (e.g. `drop_refused`).
        users: user_id -> builder (with the line the user was first seen at), including users left out.
    """

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        self.records: list[UserRecord] = []
        self.problems: list[BadRecord] = []
        self.excluded: list[BadRecord] = []
        self.users: dict[str, UserBuilder] = {}

    def line_of(self, user_id: str) -> int:
        """The line a user was first seen at."""
        return self.users[user_id].line

    def problem(self, line: int, user_id: str | None, kind: str, reason: str, example_id: str | None = None) -> None:
        """Record a bad record or answer."""
        self.problems.append(BadRecord(str(self.path), line, user_id, reason, kind, example_id))

    def add_problem(self, problem: BadRecord) -> None:
        """Record an already-built problem (e.g. a malformed JSON line)."""
        self.problems.append(problem)

    def new_user(self, builder: UserBuilder) -> bool:
        """Register a user; a repeated user id is a problem and the new record is left out.

        Returns:
            True if the user was registered.
        """
        first = self.users.get(builder.user_id)
        if first is not None:
            self.problem(
                builder.line,
                builder.user_id,
                DUPLICATE_USER,
                f"duplicate user id {builder.user_id!r} (first seen at line {first.line}); this record is left out",
            )
            return False
        self.users[builder.user_id] = builder
        return True

    def add_answer(
        self,
        user: UserBuilder,
        line: int,
        example_id: str,
        question: str,
        options: Sequence[str],
        answer: str,
        *,
        distribution: Sequence[float] | None = None,
    ) -> None:
        """Add one valid answer to `user`, unless its id repeats one already added (a problem)."""
        first_line = user.id_lines.get(example_id)
        if first_line is not None:
            self.problem(
                line,
                user.user_id,
                DUPLICATE_EXAMPLE,
                f"question {example_id!r} answered twice by this user (first at line {first_line}); "
                "the repeat is left out",
                example_id,
            )
            return
        user.id_lines[example_id] = line
        user.examples.append(make_example(question, options, answer))
        user.example_ids.append(example_id)
        if user.distributions is not None and distribution is not None:
            user.distributions[example_id] = tuple(float(x) for x in distribution)

    def finish(self, refused_label: str) -> "FileReport":
        """Build `records`; users left with no answers become problems (or exclusions, if only refusals).

        Args:
            refused_label: How the dropped refusals are named in exclusion messages.

        Returns:
            This report.
        """
        records = self.records
        for user in self.users.values():
            if user.n_refused:
                self.excluded.append(
                    BadRecord(
                        str(self.path),
                        user.line,
                        user.user_id,
                        f"left out {user.n_refused} {refused_label} answer(s) (drop_refused=True)",
                        REFUSED_DROPPED,
                    )
                )
            if user.examples:
                records.append(user.build(self.source))
            elif user.n_seen and user.n_seen == user.n_refused:
                self.excluded.append(
                    BadRecord(
                        str(self.path),
                        user.line,
                        user.user_id,
                        "no answers left after drop_refused=True; user left out",
                        REFUSED_DROPPED,
                    )
                )
            else:
                detail = (
                    "has no answers"
                    if not user.n_seen
                    else f"has none valid of its {user.n_seen} answer(s) (each is listed as a problem)"
                )
                self.problem(user.line, user.user_id, NO_VALID_ANSWERS, f"user {detail}; user left out")
        return self
