"""Bad-record reports and the errors raised when a data file cannot be loaded as-is."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fermi_dspy.errors import FermiError

MALFORMED_JSON = "malformed_json"
MALFORMED_LINE = "malformed_line"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"
BAD_OPTIONS = "bad_options"
NULL_ANSWER = "null_answer"
ANSWER_NOT_IN_OPTIONS = "answer_not_in_options"
INCONSISTENT_ANSWER = "inconsistent_answer"
DUPLICATE_USER = "duplicate_user"
DUPLICATE_EXAMPLE = "duplicate_example"
NO_VALID_ANSWERS = "no_valid_answers"
UNKNOWN_ITEM = "unknown_item"

# Kinds used in `LoadedUsers.excluded`: data that is fine but left out on purpose by a loader option.
REFUSED_DROPPED = "refused_dropped"
TOO_FEW_EXAMPLES = "too_few_examples"
SAMPLED_OUT = "sampled_out"
OUT_OF_VOCABULARY = "out_of_vocabulary"

_MAX_LISTED = 20


@dataclass(frozen=True)
class BadRecord:
    """One problem found in a data file (or one thing left out on purpose).

    Attributes:
        file: Path of the file the problem is in.
        line: 1-based line number in `file` (for a `datasets.Dataset`, the 1-based row).
        user_id: The user the line belongs to, if it could be read.
        reason: What is wrong, in words.
        kind: A short machine-readable category, e.g. "answer_not_in_options" (see the constants in this module).
        example_id: The answer (e.g. OpinionQA qid) the problem is about, if it is about a single answer.
    """

    file: str
    line: int
    user_id: str | None
    reason: str
    kind: str = INVALID_FIELD
    example_id: str | None = None

    def __str__(self) -> str:
        where = f"{Path(self.file).name}:{self.line}"
        who = []
        if self.user_id is not None:
            who.append(f"user {self.user_id}")
        if self.example_id is not None:
            who.append(f"example {self.example_id}")
        if who:
            where += f" ({', '.join(who)})"
        return f"{where}: {self.reason}"


class DataError(FermiError, ValueError):
    """A data file has bad records (or cannot be found / read).

    Attributes:
        problems: The bad records that caused the error (empty if the error is not about records).
    """

    def __init__(self, message: str, problems: Sequence[BadRecord] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class DataNotFoundError(DataError, FileNotFoundError):
    """The data directory or a data file does not exist."""


def format_problems(problems: Sequence[BadRecord], *, max_listed: int | None = _MAX_LISTED) -> str:
    """Render problems one per line, listing at most `max_listed` of them.

    Args:
        problems: The problems to render.
        max_listed: How many to show before summarising the rest as "... and N more" (None: all of them).

    Returns:
        The indented multi-line text.
    """
    if max_listed is None:
        max_listed = len(problems)
    lines = [f"  {p}" for p in problems[:max_listed]]
    if len(problems) > max_listed:
        lines.append(f"  ... and {len(problems) - max_listed} more")
    return "\n".join(lines)


def bad_records_error(path: Path | str, problems: Sequence[BadRecord]) -> DataError:
    """Build the `DataError` raised by `load_users(..., on_bad_record="raise")`.

    Args:
        path: The file the problems are in.
        problems: All problems found (must not be empty).

    Returns:
        The error, naming the file, every line (up to a limit), and how to proceed.
    """
    n = len(problems)
    message = (
        f"{n} bad record{'s' if n != 1 else ''}/answer{'s' if n != 1 else ''} in {path}:\n{format_problems(problems)}\n"
        "Fix these lines in the file, or pass on_bad_record='skip' to leave exactly these records/answers out "
        "(they are then listed in LoadedUsers.problems)."
    )
    return DataError(message, problems)


def short_repr(value: object, limit: int = 200) -> str:
    """`repr(value)`, cut to `limit` characters for error messages."""
    text = repr(value)
    if len(text) <= limit:
        return text
    tail = text[-1] if text[-1] in "]}'\"" else ""
    return text[: limit - 4 - len(tail)] + " ..." + tail
