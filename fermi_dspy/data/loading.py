"""`load_users`: one entry point for every data set, with the bad-record policy applied in one place."""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fermi_dspy.data.builder import FileReport
from fermi_dspy.data.globalopinionqa import GLOBAL, GLOBAL_FILE, read_globalopinionqa
from fermi_dspy.data.movielens import (
    MOVIELENS_RATING,
    MOVIELENS_TAG,
    RATINGS_FILE,
    TAGS_FILE,
    read_movielens_ratings,
    read_movielens_tags,
)
from fermi_dspy.data.opinionqa import HWANG, HWANG_FILE, PANELISTS, PANELISTS_FILE, read_hwang, read_panelists
from fermi_dspy.data.paths import resolve_data_file
from fermi_dspy.data.problems import (
    NO_VALID_ANSWERS,
    NULL_ANSWER,
    TOO_FEW_EXAMPLES,
    BadRecord,
    bad_records_error,
    format_problems,
)
from fermi_dspy.data.records import LoadedUsers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSpec:
    """How to find and read one data set."""

    name: str
    relative_path: str
    reader: Callable[..., FileReport]
    description: str
    options: tuple[str, ...] = ()
    """Keyword options of `reader` that `load_users(**options)` passes on."""


DATASETS: dict[str, DatasetSpec] = {
    PANELISTS: DatasetSpec(
        PANELISTS, PANELISTS_FILE, read_panelists, "OpinionQA Pew ATP panelists: 12-attribute profile, ~1000 answers"
    ),
    HWANG: DatasetSpec(
        HWANG, HWANG_FILE, read_hwang, "OpinionQA users x topics (Hwang et al. 2023): party/ideology, 30 answers"
    ),
    GLOBAL: DatasetSpec(
        GLOBAL, GLOBAL_FILE, read_globalopinionqa, "GlobalOpinionQA countries: most chosen option per question"
    ),
    MOVIELENS_RATING: DatasetSpec(
        MOVIELENS_RATING, RATINGS_FILE, read_movielens_ratings,
        "MovieLens raters (LaMP-3-like): star rating of a movie from its title, year, genres; no profile",
        ("max_examples", "sample_seed"),
    ),
    MOVIELENS_TAG: DatasetSpec(
        MOVIELENS_TAG, TAGS_FILE, read_movielens_tags,
        "MovieLens taggers (LaMP-2-like): a movie's tag among LaMP-2's 15 from its title, year, genres; no profile",
        ("max_examples", "sample_seed"),
    ),
}

ALIASES = {
    "panelists": PANELISTS,
    "hwang": HWANG,
    "global": GLOBAL,
    "movielens-rating": MOVIELENS_RATING,
    "movielens-tag": MOVIELENS_TAG,
}


def canonical_dataset(name: str) -> str:
    """Map a data set name or alias (`ALIASES`, e.g. "hwang", "movielens-rating") to its canonical name.

    Raises:
        ValueError: Unknown name.
    """
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        known = ", ".join(f"{n!r}" for n in [*DATASETS, *ALIASES])
        raise ValueError(f"unknown dataset {name!r}; choose one of {known}.")
    return key


def _set_aside_null_answers(report: FileReport) -> tuple[list[BadRecord], list[BadRecord]]:
    """Split a report's problems into (problems, null answers and the users that had nothing but null answers)."""
    nulls_per_user: dict[str | None, int] = {}
    for problem in report.problems:
        if problem.kind == NULL_ANSWER:
            nulls_per_user[problem.user_id] = nulls_per_user.get(problem.user_id, 0) + 1
    kept, aside = [], []
    for problem in report.problems:
        seen = report.users[problem.user_id].n_seen if problem.user_id in report.users else 0
        only_nulls = problem.kind == NO_VALID_ANSWERS and seen > 0 and nulls_per_user.get(problem.user_id, 0) == seen
        (aside if problem.kind == NULL_ANSWER or only_nulls else kept).append(problem)
    return kept, aside


def load_users(
    dataset: str,
    path: str | Path | None = None,
    *,
    on_bad_record: Literal["raise", "skip", "collect"] = "raise",
    limit: int | None = None,
    min_examples: int = 1,
    drop_refused: bool = False,
    null_answers: Literal["problem", "skip"] = "problem",
    **options: Any,
) -> LoadedUsers:
    """Load a data set as per-user records.

    The whole file is always read and checked, whatever `limit` is. Every answer that cannot be used (malformed
    line, missing field, null answer, answer not among its options, repeated question, ...) is a problem naming
    its file and 1-based line; a bad answer leaves out only that answer, a bad record or a repeated user id leaves
    out that record, and a user left with no valid answers is a problem too. Nothing is dropped silently.

    Args:
        dataset: "opinionqa_panelists" (alias "panelists"), "opinionqa_hwang" ("hwang"), "globalopinionqa"
            ("global"), "movielens_rating" ("movielens-rating") or "movielens_tag" ("movielens-tag").
        path: None for the file in `default_data_dir()`; a data file; or a directory holding it (the data directory
            or the data set's own folder).
        on_bad_record: "raise" raises `DataError` listing every problem in the file; "skip" leaves the bad
            records/answers out, logs a warning, and lists them in `LoadedUsers.problems`; "collect" is "skip"
            without the warning, for callers that apply a policy of their own (e.g. `fermi_dspy.runs`).
        limit: Keep only the first `limit` users (in file order) after all checks and filters.
        min_examples: Leave out (and list in `LoadedUsers.excluded`) valid users with fewer answers than this, e.g.
            `n_train + n_test` for a fixed split. Default 1: keep every user that has an answer.
        drop_refused: Leave out answers that are a refusal ("Refused" in OpinionQA; "DK/Refused", "Don't know",
            "No answer", "Missing..." as a GlobalOpinionQA country's most chosen option). Default False: refusals are
            real answers among the options and are kept. Counts per user are listed in `LoadedUsers.excluded`.
            MovieLens has no refusals: nothing is dropped.
        null_answers: "problem" (default) counts a null answer (no recorded choice, e.g. Hwang's "UNKNOWN") as a bad
            answer; "skip" leaves it out on purpose with a warning and lists it in `LoadedUsers.excluded` (kind
            "null_answer"), like a user left with no answer but null ones. Structural problems stay problems.
        **options: The data set's own reader options (`DatasetSpec.options`). MovieLens: `max_examples` (keep a
            seeded sample of at most this many examples per user, default 100; None for all; sampled users are
            listed in `LoadedUsers.excluded`) and `sample_seed` (default 0). The opinion data sets take none.

    Returns:
        The users with the problems and exclusions found.

    Raises:
        DataError: `on_bad_record="raise"` and the file has problems.
        DataNotFoundError: The file or data directory does not exist.
        ValueError: Unknown dataset or invalid argument.
    """
    spec = DATASETS[canonical_dataset(dataset)]
    if on_bad_record not in ("raise", "skip", "collect"):
        raise ValueError(f"on_bad_record must be 'raise', 'skip' or 'collect', got {on_bad_record!r}.")
    if null_answers not in ("problem", "skip"):
        raise ValueError(f"null_answers must be 'problem' or 'skip', got {null_answers!r}.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}.")
    if isinstance(min_examples, bool) or not isinstance(min_examples, int) or min_examples < 1:
        raise ValueError(f"min_examples must be an int >= 1, got {min_examples!r}.")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        accepted = ", ".join(spec.options) if spec.options else "none"
        raise ValueError(f"dataset {spec.name!r} has no option(s) {unknown}; its options are: {accepted}.")

    file = resolve_data_file(spec.relative_path, path)
    report = spec.reader(file, drop_refused=drop_refused, **options)
    problems, excluded = report.problems, report.excluded
    if null_answers == "skip":
        problems, nulls = _set_aside_null_answers(report)
        excluded = [*nulls, *excluded]
        if nulls:
            logger.warning("%s: left out %d answer(s) with no recorded choice (null_answers='skip'):\n%s", file,
                           sum(1 for n in nulls if n.kind == NULL_ANSWER), format_problems(nulls))
    if problems:
        if on_bad_record == "raise":
            raise bad_records_error(file, problems)
    if problems and on_bad_record == "skip":
        logger.warning(
            "%s: skipped %d bad record(s)/answer(s) (on_bad_record='skip'):\n%s",
            file,
            len(problems),
            format_problems(problems),
        )

    kept = []
    for record in report.records:
        if len(record) < min_examples:
            excluded.append(
                BadRecord(
                    str(file),
                    report.line_of(record.user_id),
                    record.user_id,
                    f"only {len(record)} answer(s), fewer than min_examples={min_examples}; user left out",
                    TOO_FEW_EXAMPLES,
                )
            )
        else:
            kept.append(record)
    if excluded:
        logger.info("%s: left out on purpose:\n%s", file, format_problems(excluded))
    if limit is not None:
        kept = kept[:limit]
    loaded = LoadedUsers(records=kept, problems=list(problems), path=file, dataset=spec.name, excluded=excluded)
    logger.info("Loaded %s: %d users, %d answers from %s", spec.name, len(loaded), sum(len(r) for r in loaded), file)
    return loaded
