"""Per-user records: a user's profile and their real answers as DSPy examples."""

import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

from fermi_dspy.data.problems import BadRecord, format_problems

INPUT_FIELDS = ("question", "options")
LABEL_FIELD = "answer"


def make_example(question: str, options: Sequence[str], answer: str) -> dspy.Example:
    """Build the DSPy example for one answer: inputs `question`, `options`; label `answer`.

    The example carries no other fields, since DSPy treats every non-input field as a label.

    Args:
        question: The survey question.
        options: The answer options, in survey order.
        answer: The option the user chose (must be one of `options`).

    Returns:
        A fresh `dspy.Example` with its own copy of `options`.
    """
    return dspy.Example(question=question, options=list(options), answer=answer).with_inputs(*INPUT_FIELDS)


@dataclass(frozen=True)
class UserRecord:
    """One user: their profile and their answers, in the order of the source file.

    Attributes:
        user_id: Unique id of the user within its data set (filesystem-safe for the loaders here).
        profile: Attribute -> value (e.g. {"POLPARTY": "Republican"}, {"Country": "Mexico"}), or None.
        examples: One `dspy.Example(question, options, answer).with_inputs("question", "options")` per answer (the
            MovieLens tasks have their own fields, see `fermi_dspy.data.movielens`).
        example_ids: A stable id per example (OpinionQA qid, or a hash of the question), same order as `examples`.
        source: The data set, e.g. "opinionqa_panelists", "opinionqa_hwang", "globalopinionqa", "movielens_rating".
        meta: Record-level facts that are not part of the profile (e.g. {"topic": "Guns", "wave": ...}).
        distributions: For GlobalOpinionQA, example_id -> the country's answer shares per option (same order as
            the options); None for data sets of individual answers.
    """

    user_id: str
    profile: dict[str, str] | None
    examples: tuple[dspy.Example, ...]
    example_ids: tuple[str, ...]
    source: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    distributions: Mapping[str, tuple[float, ...]] | None = None

    def __post_init__(self) -> None:
        if len(self.examples) != len(self.example_ids):
            raise ValueError(
                f"user {self.user_id}: {len(self.examples)} examples but {len(self.example_ids)} example_ids."
            )
        if len(set(self.example_ids)) != len(self.example_ids):
            seen: set[str] = set()
            dups = sorted({i for i in self.example_ids if i in seen or seen.add(i)})
            raise ValueError(f"user {self.user_id}: duplicate example ids {dups[:5]}; ids must be unique per user.")

    def __len__(self) -> int:
        return len(self.examples)


@dataclass(frozen=True)
class LoadedUsers:
    """The result of `load_users`: the users, and everything that was left out and why.

    Iterating, `len()` and indexing go over `records`.

    Attributes:
        records: The users, in file order.
        problems: Bad records/answers that were skipped (only non-empty with `on_bad_record="skip"`).
        path: The file that was read.
        dataset: The canonical data set name.
        excluded: Valid data left out on purpose by a loader option (`drop_refused`, `min_examples`).
    """

    records: list[UserRecord]
    problems: list[BadRecord]
    path: Path
    dataset: str
    excluded: list[BadRecord] = field(default_factory=list)

    def __iter__(self) -> Iterator[UserRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> UserRecord:
        return self.records[index]

    @property
    def user_ids(self) -> list[str]:
        """The user ids, in order."""
        return [r.user_id for r in self.records]

    def get(self, user_id: str) -> UserRecord:
        """Return the user with this id.

        Raises:
            KeyError: No such user.
        """
        for record in self.records:
            if record.user_id == user_id:
                return record
        raise KeyError(f"no user {user_id!r} in {self.path} ({len(self.records)} users)")

    def summary(self) -> str:
        """One paragraph describing what was loaded, skipped and excluded."""
        n_examples = sum(len(r) for r in self.records)
        text = f"{self.dataset}: {len(self.records)} users, {n_examples} answers from {self.path}"
        if self.problems:
            text += f"\n{len(self.problems)} bad record(s) skipped:\n{format_problems(self.problems)}"
        if self.excluded:
            text += f"\n{len(self.excluded)} left out on purpose:\n{format_problems(self.excluded)}"
        return text


def slugify(text: str) -> str:
    """Lower-case ASCII slug of `text` ("Privacy & Surveilance" -> "privacy-surveilance")."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
