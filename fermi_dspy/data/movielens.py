"""MovieLens loaders: LaMP-3-like per-user rating prediction and LaMP-2-like per-user tagging, with no profile.

LaMP's own files cannot be obtained offline (`../shared/data/lamp/README.md`); LaMP-2 ("personalized movie tagging")
was built from MovieLens tag applications, and MovieLens ratings stand in for LaMP-3's per-user rating prediction. Both
tasks read `movielens_ml_latest_small/` (GroupLens ml-latest-small, 2015; research-use license in its `README.txt`):

* "movielens_rating" ("movielens-rating"): one example per rating in `ratings.csv.gz`. Inputs `title` (str), `year`
  (int, or None when the title has none) and `genres` (list of str, empty for "(no genres listed)"); label `rating`
  (float, 0.5 to 5 stars in half stars). Every one of the 706 raters has at least 20 ratings (GroupLens' selection);
  a user's record keeps a seeded sample of at most `max_examples` (default 100) of them, so one user is not
  thousands of examples (263 users have more than 100).
* "movielens_tag" ("movielens-tag"): one example per (user, movie) the user tagged with one of LaMP-2's 15 tags
  (`LAMP2_TAGS`). Inputs `title`, `year`, `genres` and `options` (the 15 tags, the same list for every example, so a
  multiple-choice student constrains its answer to the vocabulary and the library's option checks apply); label
  `tag`, one of `options`. A raw tag is matched to the vocabulary by `match_tag` (case, surrounding space and
  runs of spaces/hyphens/underscores do not matter; no synonyms). A movie the user gave several vocabulary tags is
  ONE example: its label is the tag applied first (earliest timestamp; ties in vocabulary order) and all of them, in
  that order, are in `UserRecord.meta["tags"][example_id]`, so one input never carries two labels and a split
  never puts the same movie in train and test.

Example ids are the movieId (as a string); user ids are the MovieLens userId (as a string), the same user in both
tasks. Titles lose their year and get a trailing English article back in front ("Usual Suspects, The (1995)" ->
"The Usual Suspects", 1995). Which users qualify for a split is `load_users(min_examples=...)` (the runs pass
`n_train + n_test`).

The files as stored here have NO header row in `ratings.csv.gz` and `movies.csv`, and one in `tags.csv`
(`NOTE.md`); each reader accepts either (a first row naming the columns is a header, and then the columns are taken
by name). Every row is checked (ids, rating range, timestamp, movie known in `movies.csv`, column count, CSV
syntax, UTF-8), and every problem is a `BadRecord` naming the file and 1-based line, as for the opinion loaders.
"""

import csv
import gzip
import hashlib
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import dspy

from fermi_dspy.data.builder import FileReport, UserBuilder
from fermi_dspy.data.checks import InvalidItem
from fermi_dspy.data.problems import (
    DUPLICATE_EXAMPLE,
    INVALID_FIELD,
    MALFORMED_LINE,
    MISSING_FIELD,
    NO_VALID_ANSWERS,
    OUT_OF_VOCABULARY,
    SAMPLED_OUT,
    UNKNOWN_ITEM,
    BadRecord,
    DataError,
    DataNotFoundError,
    short_repr,
)
from fermi_dspy.data.records import UserRecord

logger = logging.getLogger(__name__)

MOVIELENS_RATING = "movielens_rating"
MOVIELENS_TAG = "movielens_tag"
MOVIELENS_DIR = "movielens_ml_latest_small"
RATINGS_FILE = f"{MOVIELENS_DIR}/ratings.csv.gz"
TAGS_FILE = f"{MOVIELENS_DIR}/tags.csv"
MOVIES_FILE_NAME = "movies.csv"
"""The movies file, read from the folder of the ratings or tags file."""

DEFAULT_MAX_EXAMPLES = 100
"""Default cap on one user's examples (a seeded sample): room for train + validation + test and a history to
retrieve few-shot examples from, without records of thousands of ratings."""

LAMP2_TAGS = (
    "sci-fi",
    "based on a book",
    "comedy",
    "action",
    "twist ending",
    "dystopia",
    "dark comedy",
    "classic",
    "psychology",
    "fantasy",
    "romance",
    "thought-provoking",
    "social commentary",
    "violence",
    "true story",
)
"""LaMP-2's 15-tag vocabulary (Salemi et al. 2023), in the order LaMP lists it; the `options` of every tag example."""

RATING_INPUTS = ("title", "year", "genres")
RATING_LABEL = "rating"
TAG_INPUTS = ("title", "year", "genres", "options")
TAG_LABEL = "tag"

MIN_RATING, MAX_RATING = 0.5, 5.0
NO_GENRES = "(no genres listed)"

RATING_COLUMNS = ("userId", "movieId", "rating", "timestamp")
TAG_COLUMNS = ("userId", "movieId", "tag", "timestamp")
MOVIE_COLUMNS = ("movieId", "title", "genres")

_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-\u2013]\s*(?:\d{4})?)?\)$")
_TRAILING_ARTICLE = re.compile(r"^(?P<main>.+?), (?P<article>The|A|An)(?P<rest>\s+\(.*\))?$")
_SEPARATORS = re.compile(r"[\s_-]+")
_DIGITS = re.compile(r"^\d+$")


# -- items and examples --------------------------------------------------------------------------------------------


def parse_title(raw: str) -> tuple[str, int | None]:
    """Split a MovieLens title into the title and its year, and put a trailing English article back in front.

    "Toy Story (1995)" -> ("Toy Story", 1995); "Usual Suspects, The (1995)" -> ("The Usual Suspects", 1995);
    "Postman, The (Postino, Il) (1994)" -> ("The Postman (Postino, Il)", 1994); a series' "(1975-1979)" or "(2007-)"
    gives its first year; a title without a year in parentheses at its end keeps its text and has year None.

    Args:
        raw: The `title` column of `movies.csv`.

    Returns:
        (title, year or None).
    """
    text = raw.strip()
    year = None
    match = _YEAR.match(text)
    if match and match.group("title").strip():
        text, year = match.group("title").strip(), int(match.group("year"))
    article = _TRAILING_ARTICLE.match(text)
    if article:
        text = f"{article.group('article')} {article.group('main')}{article.group('rest') or ''}"
    return text, year


def parse_genres(raw: str) -> list[str]:
    """The genres of "A|B|C" as a list; "(no genres listed)" is no genre ([])."""
    text = raw.strip()
    if text == NO_GENRES:
        return []
    return [genre.strip() for genre in text.split("|") if genre.strip()]


def _tag_key(text: str) -> str:
    return _SEPARATORS.sub(" ", text.strip().lower()).strip()


_VOCABULARY = {_tag_key(tag): tag for tag in LAMP2_TAGS}


def match_tag(raw: str) -> str | None:
    """The LaMP-2 tag a raw MovieLens tag is, or None.

    Case and surrounding whitespace do not matter, and each run of spaces, hyphens or underscores counts as one
    space: "Sci-Fi", "sci fi", "SCI_FI" are "sci-fi"; "Thought provoking" is "thought-provoking". Nothing else is
    merged: no synonyms or near-misses ("scifi", "SF", "psychological", "black comedy", "based on a true story" and
    "based on book" are not vocabulary tags), since those are the user's own words for something else or close.

    Args:
        raw: The `tag` column of `tags.csv`.

    Returns:
        The vocabulary tag (as spelled in `LAMP2_TAGS`), or None.
    """
    return _VOCABULARY.get(_tag_key(raw))


def make_rating_example(title: str, year: int | None, genres: Sequence[str], rating: float) -> dspy.Example:
    """The example for one rating: inputs `title`, `year`, `genres`; label `rating` (stars, float).

    The example carries no other fields, since DSPy treats every non-input field as a label.
    """
    return dspy.Example(title=title, year=year, genres=list(genres), rating=float(rating)).with_inputs(*RATING_INPUTS)


def make_tag_example(
    title: str, year: int | None, genres: Sequence[str], tag: str, options: Sequence[str] = LAMP2_TAGS
) -> dspy.Example:
    """The example for one tagged movie: inputs `title`, `year`, `genres`, `options`; label `tag` (one of `options`).

    Each example gets its own copy of `genres` and `options`.

    Raises:
        ValueError: `tag` is not among `options`.
    """
    if tag not in options:
        raise ValueError(f"tag {tag!r} is not among the options {list(options)}.")
    return dspy.Example(title=title, year=year, genres=list(genres), options=list(options), tag=tag).with_inputs(
        *TAG_INPUTS
    )


# -- reading the CSV files -----------------------------------------------------------------------------------------


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def _is_header(cells: list[str], columns: Sequence[str]) -> bool:
    names = {c.lower() for c in columns}
    return any(cell.strip().lower() in names for cell in cells)


def iter_csv_rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str] | BadRecord]]:
    """Yield `(line, row)` for each data line of a GroupLens CSV file, or a `BadRecord` for a line that cannot be read.

    A first line that names any of `columns` is a header: the columns are then taken by name, and a header lacking
    one refuses the file. Without a header the columns are positional, in `columns` order. One record per physical
    line (as in every GroupLens file); blank lines are passed over.

    Args:
        path: The file (gzipped if it ends in ".gz").
        columns: The required columns, in GroupLens order.

    Yields:
        1-based line numbers with the row as column -> text, or the problem with that line.

    Raises:
        DataError: The header lacks a required column.
    """
    positions = {name: i for i, name in enumerate(columns)}
    width = len(columns)
    first = True
    expected = ",".join(columns)
    with _open(path) as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line_no, BadRecord(str(path), line_no, None, f"not valid UTF-8 ({exc.reason})", MALFORMED_LINE)
                first = False
                continue
            if first:
                text = text.removeprefix("\ufeff")
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            try:
                cells = next(csv.reader([text], strict=True))
            except csv.Error as exc:
                yield line_no, BadRecord(str(path), line_no, None, f"malformed CSV line: {exc}", MALFORMED_LINE)
                first = False
                continue
            if first:
                first = False
                if _is_header(cells, columns):
                    by_name = {cell.strip().lower(): i for i, cell in enumerate(cells)}
                    missing = [name for name in columns if name.lower() not in by_name]
                    if missing:
                        raise DataError(
                            f"{path}:{line_no}: the header {cells} has no column(s) {missing}; "
                            f"a MovieLens {path.name} needs the columns {expected}."
                        )
                    positions = {name: by_name[name.lower()] for name in columns}
                    width = len(cells)
                    expected = ",".join(cells)
                    continue
            if len(cells) != width:
                if len(cells) < width:
                    absent = [name for name, i in positions.items() if i >= len(cells)]
                    kind, reason = MISSING_FIELD, (
                        f"has {len(cells)} of the {width} columns {expected} (no {', '.join(map(repr, absent))})"
                    )
                else:
                    kind, reason = MALFORMED_LINE, (
                        f"has {len(cells)} columns, expected {width} ({expected}); a value with a comma must be "
                        "in double quotes"
                    )
                yield line_no, BadRecord(str(path), line_no, None, reason, kind)
                continue
            yield line_no, {name: cells[i] for name, i in positions.items()}


def _positive_id(row: dict[str, str], key: str) -> int:
    value = row[key].strip()
    if not _DIGITS.match(value) or int(value) == 0:
        raise InvalidItem(INVALID_FIELD, f"{key} must be a positive integer, got {short_repr(row[key], 60)}")
    return int(value)


def _timestamp(row: dict[str, str]) -> int:
    value = row["timestamp"].strip()
    if not _DIGITS.match(value):
        raise InvalidItem(
            INVALID_FIELD, f"timestamp must be whole seconds since 1970, got {short_repr(row['timestamp'], 60)}"
        )
    return int(value)


def check_rating(raw: str) -> float:
    """A star rating: a number from 0.5 to 5 in half stars.

    Raises:
        InvalidItem: Not a number, out of range, or not a whole or half star.
    """
    try:
        value = float(raw.strip())
    except ValueError:
        raise InvalidItem(INVALID_FIELD, f"rating {short_repr(raw, 60)} is not a number") from None
    if not math.isfinite(value) or not MIN_RATING <= value <= MAX_RATING:
        raise InvalidItem(INVALID_FIELD, f"rating {raw.strip()} is out of range (0.5 to 5 stars)")
    if value * 2 != int(value * 2):
        raise InvalidItem(INVALID_FIELD, f"rating {raw.strip()} is not a whole or half star")
    return value


@dataclass(frozen=True)
class Movie:
    """One movie of `movies.csv`.

    Attributes:
        movie_id: The MovieLens movieId.
        title: The title without its year, article in front (`parse_title`).
        year: The year from the title, or None.
        genres: The genres (empty for "(no genres listed)").
        line: The line of `movies.csv` it is on.
    """

    movie_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    line: int


@dataclass
class Movies:
    """What `read_movies` found: the usable movies, and the problem of each movie id that is not usable."""

    path: Path
    movies: dict[int, Movie] = field(default_factory=dict)
    bad: dict[int, BadRecord] = field(default_factory=dict)
    problems: list[BadRecord] = field(default_factory=list)

    def get(self, movie_id: int) -> Movie:
        """The movie with this id.

        Raises:
            InvalidItem: No usable movie has this id.
        """
        movie = self.movies.get(movie_id)
        if movie is not None:
            return movie
        bad = self.bad.get(movie_id)
        if bad is not None:
            raise InvalidItem(
                UNKNOWN_ITEM, f"movieId {movie_id} has no usable movie ({self.path.name}:{bad.line} is bad)"
            )
        raise InvalidItem(UNKNOWN_ITEM, f"movieId {movie_id} is not in {self.path.name}")


def read_movies(path: Path) -> Movies:
    """Read `movies.csv` (movieId,title,genres; header optional), checking every line.

    Args:
        path: The file.

    Returns:
        The movies and the problems (bad lines, repeated movieIds: the first stays).
    """
    found = Movies(path)
    for line, row in iter_csv_rows(path, MOVIE_COLUMNS):
        if isinstance(row, BadRecord):
            found.problems.append(row)
            continue
        movie_id = None
        try:
            movie_id = _positive_id(row, "movieId")
            first = found.movies.get(movie_id) or found.bad.get(movie_id)
            if first is not None:
                raise InvalidItem(
                    DUPLICATE_EXAMPLE, f"movieId {movie_id} repeats line {first.line}; this line is left out"
                )
            if not row["title"].strip():
                raise InvalidItem(MISSING_FIELD, "title is empty")
            if not row["genres"].strip():
                raise InvalidItem(MISSING_FIELD, f"genres is empty (a movie without genres has {NO_GENRES!r})")
        except InvalidItem as exc:
            example_id = None if movie_id is None else str(movie_id)
            problem = BadRecord(str(path), line, None, exc.reason, exc.kind, example_id)
            found.problems.append(problem)
            if movie_id is not None and exc.kind != DUPLICATE_EXAMPLE:
                found.bad[movie_id] = problem
            continue
        title, year = parse_title(row["title"])
        found.movies[movie_id] = Movie(movie_id, title, year, tuple(parse_genres(row["genres"])), line)
    return found


def _movies_beside(path: Path) -> Movies:
    movies_path = path.parent / MOVIES_FILE_NAME
    if not movies_path.is_file():
        raise DataNotFoundError(
            f"{movies_path} does not exist: the MovieLens loaders read the movies (titles, genres) from "
            f"{MOVIES_FILE_NAME} in the folder of {path.name}."
        )
    return read_movies(movies_path)


def _check_options(max_examples: int | None, sample_seed: int) -> None:
    if max_examples is not None and (
        isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1
    ):
        raise ValueError(f"max_examples must be an int >= 1 or None (no cap), got {max_examples!r}.")
    if isinstance(sample_seed, bool) or not isinstance(sample_seed, int):
        raise ValueError(f"sample_seed must be an int, got {sample_seed!r}.")


def _sample_key(seed: int, user_id: str, example_id: str) -> bytes:
    return hashlib.sha256(f"movielens-sample\x1f{seed}\x1f{user_id}\x1f{example_id}".encode()).digest()


def _sampled(user_id: str, example_ids: list[str], max_examples: int | None, seed: int) -> list[int]:
    """Indices (in file order) of the examples kept: all, or a seeded sample of `max_examples` of them."""
    if max_examples is None or len(example_ids) <= max_examples:
        return list(range(len(example_ids)))
    order = sorted(range(len(example_ids)), key=lambda i: _sample_key(seed, user_id, example_ids[i]))
    return sorted(order[:max_examples])


class _Reader:
    """The bookkeeping both readers share: users by first line, row problems, the per-user sample, the records."""

    def __init__(self, path: Path, source: str, noun: str, max_examples: int | None, sample_seed: int) -> None:
        _check_options(max_examples, sample_seed)
        self.report = FileReport(path, source)
        self.noun = noun
        self.max_examples = max_examples
        self.sample_seed = sample_seed
        self.movies = _movies_beside(path)
        self.report.problems.extend(self.movies.problems)

    def user(self, user_id: str, line: int) -> UserBuilder:
        builder = self.report.users.get(user_id)
        if builder is None:
            builder = UserBuilder(user_id, None, line, meta={"movielens_user_id": int(user_id)})
            self.report.new_user(builder)
        return builder

    def row_problem(self, line: int, user: UserBuilder | None, exc: InvalidItem, example_id: str | None) -> None:
        self.report.problem(line, user.user_id if user else None, exc.kind, f"{exc.reason}; {self.noun} left out",
                            example_id)

    def no_valid(self, user: UserBuilder) -> None:
        self.report.problem(
            user.line, user.user_id, NO_VALID_ANSWERS,
            f"user has none valid of its {user.n_seen} {self.noun}(s) (each is listed as a problem); user left out",
        )

    def record(self, user: UserBuilder, meta: dict[str, Any], per_example: dict[str, Any] | None = None) -> None:
        keep = _sampled(user.user_id, user.example_ids, self.max_examples, self.sample_seed)
        if len(keep) < len(user.examples):
            self.report.excluded.append(
                BadRecord(
                    str(self.report.path), user.line, user.user_id,
                    f"kept a seeded sample of {len(keep)} of the user's {len(user.examples)} {self.noun}s "
                    f"(max_examples={self.max_examples}, sample_seed={self.sample_seed}); the rest left out",
                    SAMPLED_OUT,
                )
            )
        ids = [user.example_ids[i] for i in keep]
        if per_example is not None:
            meta = {**meta, "tags": {i: per_example[i] for i in ids}}
        self.report.records.append(
            UserRecord(
                user_id=user.user_id,
                profile=None,
                examples=tuple(user.examples[i] for i in keep),
                example_ids=tuple(ids),
                source=self.report.source,
                meta={**user.meta, **meta},
            )
        )


def read_movielens_ratings(
    path: Path, *, drop_refused: bool = False, max_examples: int | None = DEFAULT_MAX_EXAMPLES, sample_seed: int = 0
) -> FileReport:
    """Read MovieLens ratings into one record per user (the rating task), with movies from `movies.csv` beside it.

    Args:
        path: `ratings.csv.gz` (or `ratings.csv`): userId,movieId,rating,timestamp, header optional.
        drop_refused: Accepted for `load_users`; MovieLens has no refusals, so nothing is dropped.
        max_examples: Keep a seeded sample of at most this many ratings per user (None: all); the users sampled
            are listed in `excluded`. The sample is in file order, independent of the split seed.
        sample_seed: Seeds that sample.

    Returns:
        The report: records with examples `Example(title, year, genres, rating)`, profile None, meta
        {"movielens_user_id", "n_ratings"} (n_ratings: the user's valid ratings before the sample).

    Raises:
        DataNotFoundError: `movies.csv` is not beside `path`.
        DataError: A header lacks a required column.
        ValueError: `max_examples` or `sample_seed` is invalid.
    """
    del drop_refused
    reader = _Reader(path, MOVIELENS_RATING, "rating", max_examples, sample_seed)
    report = reader.report
    for line, row in iter_csv_rows(path, RATING_COLUMNS):
        if isinstance(row, BadRecord):
            report.add_problem(row)
            continue
        user = example_id = None
        try:
            user = reader.user(str(_positive_id(row, "userId")), line)
            user.n_seen += 1
            example_id = str(_positive_id(row, "movieId"))
            rating = check_rating(row["rating"])
            _timestamp(row)
            movie = reader.movies.get(int(example_id))
            first = user.id_lines.get(example_id)
            if first is not None:
                raise InvalidItem(
                    DUPLICATE_EXAMPLE, f"movie {example_id} rated twice by this user (first at line {first})"
                )
        except InvalidItem as exc:
            reader.row_problem(line, user, exc, example_id)
            continue
        user.id_lines[example_id] = line
        user.examples.append(make_rating_example(movie.title, movie.year, movie.genres, rating))
        user.example_ids.append(example_id)
    for user in report.users.values():
        if user.examples:
            reader.record(user, {"n_ratings": len(user.examples)})
        else:
            reader.no_valid(user)
    return report


@dataclass
class _Tagged:
    movie: Movie
    line: int
    applications: list[tuple[int, int, str, int]] = field(default_factory=list)  # (timestamp, vocab index, tag, line)


def read_movielens_tags(
    path: Path, *, drop_refused: bool = False, max_examples: int | None = DEFAULT_MAX_EXAMPLES, sample_seed: int = 0
) -> FileReport:
    """Read MovieLens tag applications into one record per user (the tagging task), within LaMP-2's 15 tags.

    Tags are matched with `match_tag`; applications outside the vocabulary are counted per user in `excluded`, and
    a user with none inside it is left out (listed there too). A movie the user gave several vocabulary tags is one
    example labelled with the earliest (ties: vocabulary order); all its tags are in `meta["tags"][example_id]`.

    Args:
        path: `tags.csv`: userId,movieId,tag,timestamp, header optional.
        drop_refused: Accepted for `load_users`; MovieLens has no refusals, so nothing is dropped.
        max_examples: Keep a seeded sample of at most this many tagged movies per user (None: all).
        sample_seed: Seeds that sample.

    Returns:
        The report: records with examples `Example(title, year, genres, options, tag)`, profile None, meta
        {"movielens_user_id", "n_tag_applications", "tags"} (n_tag_applications: the user's valid vocabulary tag
        applications before the sample; tags: example id -> the movie's vocabulary tags, label first).

    Raises:
        DataNotFoundError: `movies.csv` is not beside `path`.
        DataError: A header lacks a required column.
        ValueError: `max_examples` or `sample_seed` is invalid.
    """
    del drop_refused
    reader = _Reader(path, MOVIELENS_TAG, "tag application", max_examples, sample_seed)
    report = reader.report
    tagged: dict[str, dict[str, _Tagged]] = {}
    outside: dict[str, int] = {}
    for line, row in iter_csv_rows(path, TAG_COLUMNS):
        if isinstance(row, BadRecord):
            report.add_problem(row)
            continue
        user = example_id = None
        try:
            user = reader.user(str(_positive_id(row, "userId")), line)
            user.n_seen += 1
            example_id = str(_positive_id(row, "movieId"))
            if not row["tag"].strip():
                raise InvalidItem(MISSING_FIELD, "tag is empty")
            timestamp = _timestamp(row)
            movie = reader.movies.get(int(example_id))
            tag = match_tag(row["tag"])
            movies = tagged.setdefault(user.user_id, {})
            if tag is not None and example_id in movies:
                for _, _, earlier, earlier_line in movies[example_id].applications:
                    if earlier == tag:
                        raise InvalidItem(
                            DUPLICATE_EXAMPLE,
                            f"tag {tag!r} applied again to movie {example_id} by this user (first at line "
                            f"{earlier_line}, here as {row['tag']!r})",
                        )
        except InvalidItem as exc:
            reader.row_problem(line, user, exc, example_id)
            continue
        if tag is None:
            outside[user.user_id] = outside.get(user.user_id, 0) + 1
            continue
        entry = movies.setdefault(example_id, _Tagged(movie, line))
        entry.applications.append((timestamp, LAMP2_TAGS.index(tag), tag, line))
    for user in report.users.values():
        n_outside = outside.get(user.user_id, 0)
        movies = tagged.get(user.user_id, {})
        if n_outside + sum(len(m.applications) for m in movies.values()) == 0:
            reader.no_valid(user)
            continue
        if not movies:
            report.excluded.append(
                BadRecord(str(path), user.line, user.user_id,
                          f"none of the user's {n_outside} valid tag application(s) is one of LaMP-2's 15 tags; "
                          "user left out", OUT_OF_VOCABULARY)
            )
            continue
        if n_outside:
            report.excluded.append(
                BadRecord(str(path), user.line, user.user_id,
                          f"left out {n_outside} tag application(s) that are not among LaMP-2's 15 tags",
                          OUT_OF_VOCABULARY)
            )
        all_tags: dict[str, list[str]] = {}
        for example_id, entry in movies.items():
            tags = [tag for _, _, tag, _ in sorted(entry.applications)]
            all_tags[example_id] = tags
            user.id_lines[example_id] = entry.line
            user.examples.append(make_tag_example(entry.movie.title, entry.movie.year, entry.movie.genres, tags[0]))
            user.example_ids.append(example_id)
        n_applications = sum(len(tags) for tags in all_tags.values())
        reader.record(user, {"n_tag_applications": n_applications}, all_tags)
    return report
