"""MovieLens loaders on SYNTHETIC fixture files written into tmp_path (not real data): fields, the per-user sample,
tag matching and labels, and every kind of bad record reported with its file and 1-based line."""

import gzip
from pathlib import Path

import dspy
import pytest

from fermi_dspy.data import (
    LAMP2_TAGS,
    DataError,
    DataNotFoundError,
    canonical_dataset,
    load_users,
    make_rating_example,
    make_tag_example,
    match_tag,
    parse_title,
    split_user,
)
from fermi_dspy.data.movielens import parse_genres
from fermi_dspy.runs.inputs import prepare_users
from fermi_dspy.validation import validate_examples

# SYNTHETIC movies (movies.csv has no header row, as in ../shared/data): made-up titles, not real data.
SYNTHETIC_MOVIES = [
    "1,Synthetic Story (1995),Adventure|Animation|Comedy",
    '2,"Synthetic Suspects, The (1995)",Crime|Mystery|Thriller',
    "3,Synthetic Series (1975-1979),Comedy",
    "4,Synthetic Untitled,(no genres listed)",
    '5,"Synthetic Postman, The (Postino Sintetico, Il) (1994)",Drama|Romance',
    "6,Synthetic Six (2001),Sci-Fi",
    "7,Synthetic Seven (2002),Drama",
    "8,Synthetic Eight (2003),Action",
]


def _write(path: Path, lines: list[str | bytes]) -> Path:
    data = b"".join((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.fixture
def movielens(tmp_path):
    """Write a SYNTHETIC MovieLens folder: movies.csv (no header), ratings.csv.gz (no header), tags.csv (header)."""

    def write(ratings=None, tags=None, movies=None, ratings_name="ratings.csv.gz") -> Path:
        folder = tmp_path / "movielens_ml_latest_small"
        folder.mkdir(exist_ok=True)
        _write(folder / "movies.csv", SYNTHETIC_MOVIES if movies is None else movies)
        if ratings is not None:
            _write(folder / ratings_name, ratings)
        if tags is not None:
            _write(folder / "tags.csv", ["userId,movieId,tag,timestamp", *tags])
        return folder

    return write


def _ratings(user: int, movies, rating: str = "4.0") -> list[str]:
    return [f"{user},{m},{rating},{1000 + m}" for m in movies]


# -- parsing -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Toy Story (1995)", ("Toy Story", 1995)),
        ("Usual Suspects, The (1995)", ("The Usual Suspects", 1995)),
        ("Babe Ruth Story, The (1948) ", ("The Babe Ruth Story", 1948)),  # trailing space in the real file
        ("Fawlty Towers (1975-1979)", ("Fawlty Towers", 1975)),
        ("Big Bang Theory, The (2007-)", ("The Big Bang Theory", 2007)),
        ("The Third Reich: The Rise & Fall", ("The Third Reich: The Rise & Fall", None)),
        ("(500) Days of Summer (2009)", ("(500) Days of Summer", 2009)),
        ("Postman, The (Postino, Il) (1994)", ("The Postman (Postino, Il)", 1994)),
        ("Good, the Bad and the Ugly, The (Buono, il brutto, il cattivo, Il) (1966)",
         ("The Good, the Bad and the Ugly (Buono, il brutto, il cattivo, Il)", 1966)),
        ("Miserables, Les (1995)", ("Miserables, Les", 1995)),  # only English articles move
        ("1984 (1984)", ("1984", 1984)),
    ],
)
def test_parse_title(raw, expected):
    assert parse_title(raw) == expected


def test_parse_genres():
    assert parse_genres("Adventure|Animation|Children") == ["Adventure", "Animation", "Children"]
    assert parse_genres("Comedy") == ["Comedy"]
    assert parse_genres("(no genres listed)") == []


@pytest.mark.parametrize(
    ("raw", "tag"),
    [
        ("sci-fi", "sci-fi"),
        ("Sci-Fi", "sci-fi"),
        ("sci fi", "sci-fi"),
        ("SCI_FI", "sci-fi"),
        ("  Dark  Comedy ", "dark comedy"),
        ("Based on a book", "based on a book"),
        ("Thought provoking", "thought-provoking"),
        ("true-story", "true story"),
        ("scifi", None),
        ("SF", None),
        ("based on book", None),
        ("based on a true story", None),
        ("black comedy", None),
        ("psychological", None),
        ("comedy classic", None),
    ],
)
def test_match_tag(raw, tag):
    assert match_tag(raw) == tag


def test_lamp2_vocabulary():
    assert len(LAMP2_TAGS) == len(set(LAMP2_TAGS)) == 15
    assert all(match_tag(tag) == tag for tag in LAMP2_TAGS)


def test_examples_fields_and_isolation():
    rating = make_rating_example("A", 1999, ["Drama"], 3.5)
    assert set(rating.inputs().keys()) == {"title", "year", "genres"}
    assert rating.labels().toDict() == {"rating": 3.5}
    tag = make_tag_example("A", None, [], "comedy")
    assert set(tag.inputs().keys()) == {"title", "year", "genres", "options"}
    assert tag.labels().toDict() == {"tag": "comedy"}
    assert tag.options == list(LAMP2_TAGS)
    assert make_tag_example("B", None, [], "action").options is not tag.options
    with pytest.raises(ValueError, match="'horror' is not among the options"):
        make_tag_example("A", None, [], "horror")


def test_aliases():
    assert canonical_dataset("movielens-rating") == "movielens_rating"
    assert canonical_dataset("MovieLens-Tag") == "movielens_tag"
    assert canonical_dataset("movielens_tag") == "movielens_tag"


# -- rating task ---------------------------------------------------------------------------------------------------


def test_rating_records(movielens):
    folder = movielens(ratings=[*_ratings(7, [1, 2, 3], "4.5"), "7,4,0.5,1", "9,5,5,2", "9,1,2.0,3"])
    loaded = load_users("movielens-rating", folder)
    assert loaded.dataset == "movielens_rating" and loaded.path.name == "ratings.csv.gz"
    assert loaded.problems == [] and loaded.excluded == []
    assert loaded.user_ids == ["7", "9"]
    user = loaded.get("7")
    assert user.profile is None and user.source == "movielens_rating"
    assert user.example_ids == ("1", "2", "3", "4")
    assert user.meta == {"movielens_user_id": 7, "n_ratings": 4}
    first, suspects, series, untitled = user.examples
    assert first.toDict() == {"title": "Synthetic Story", "year": 1995,
                              "genres": ["Adventure", "Animation", "Comedy"], "rating": 4.5}
    assert set(first.inputs().keys()) == {"title", "year", "genres"} and set(first.labels().keys()) == {"rating"}
    assert (suspects.title, suspects.genres) == ("The Synthetic Suspects", ["Crime", "Mystery", "Thriller"])
    assert (series.title, series.year) == ("Synthetic Series", 1975)
    assert (untitled.title, untitled.year, untitled.genres, untitled.rating) == ("Synthetic Untitled", None, [], 0.5)
    assert [e.rating for e in loaded.get("9").examples] == [5.0, 2.0]
    assert isinstance(loaded.get("9").examples[0].rating, float)


def test_rating_header_row_and_plain_csv_accepted(movielens):
    """The original GroupLens files have a header row (columns then taken by name); this copy has none."""
    folder = movielens(ratings=["movieId,userId,timestamp,rating", "2,7,100,3.0"], ratings_name="ratings.csv",
                       movies=["movieId,title,genres", *SYNTHETIC_MOVIES])
    loaded = load_users("movielens-rating", folder / "ratings.csv")
    assert loaded.user_ids == ["7"]
    assert loaded[0].examples[0].toDict() == {"title": "The Synthetic Suspects", "year": 1995,
                                              "genres": ["Crime", "Mystery", "Thriller"], "rating": 3.0}


def test_header_missing_a_column_refuses_the_file(movielens):
    folder = movielens(ratings=["userId,movieId,timestamp", "7,1,100"])
    with pytest.raises(DataError, match=r"ratings\.csv\.gz:1: the header .* has no column\(s\) \['rating'\]"):
        load_users("movielens-rating", folder, on_bad_record="skip")


def test_movies_file_must_be_beside(movielens, tmp_path):
    folder = movielens(ratings=_ratings(7, [1]))
    (folder / "movies.csv").unlink()
    with pytest.raises(DataNotFoundError, match=r"movies\.csv does not exist"):
        load_users("movielens-rating", folder)


def test_sample_cap_is_seeded_and_listed(movielens):
    folder = movielens(ratings=[*_ratings(7, range(1, 9)), *_ratings(9, [1, 2])])
    full = load_users("movielens-rating", folder, max_examples=None)
    assert len(full.get("7")) == 8 and full.excluded == []

    capped = load_users("movielens-rating", folder, max_examples=5)
    user = capped.get("7")
    assert len(user) == 5 and user.meta["n_ratings"] == 8
    assert list(user.example_ids) == sorted(user.example_ids, key=int)  # the sample stays in file order
    assert set(user.example_ids) < set(full.get("7").example_ids)
    assert len(capped.get("9")) == 2  # under the cap: untouched
    assert [(p.kind, p.user_id, p.line) for p in capped.excluded] == [("sampled_out", "7", 1)]
    assert "kept a seeded sample of 5 of the user's 8 ratings" in capped.excluded[0].reason

    again = load_users("movielens-rating", folder, max_examples=5)
    assert again.get("7").example_ids == user.example_ids
    samples = {load_users("movielens-rating", folder, max_examples=5, sample_seed=s).get("7").example_ids
               for s in range(6)}
    assert len(samples) > 1


def test_loader_options_are_checked(movielens):
    folder = movielens(ratings=_ratings(7, [1]))
    with pytest.raises(ValueError, match=r"has no option\(s\) \['max_exampels'\]; its options are: max_examples"):
        load_users("movielens-rating", folder, max_exampels=3)
    with pytest.raises(ValueError, match="max_examples must be an int >= 1 or None"):
        load_users("movielens-rating", folder, max_examples=0)
    with pytest.raises(ValueError, match=r"'opinionqa_hwang' has no option\(s\) \['max_examples'\]; .* none"):
        load_users("hwang", folder, max_examples=3)


def test_rating_bad_records_each_named_with_file_and_line(movielens):
    rows = [
        "7,1,4.0,100",  # 1 ok
        "7,2,6.0,100",  # 2 out of range
        "7,3,0,100",  # 3 out of range (no zero stars)
        "7,4,3.3,100",  # 4 not a half star
        "7,5,good,100",  # 5 not a number
        "7,99,4.0,100",  # 6 no such movie
        "7,1,3.0,100",  # 7 rated twice
        "7,6,4.0",  # 8 missing column
        "7,6,4.0,100,extra",  # 9 an extra column
        '7,6,"4.0,100',  # 10 malformed CSV (unterminated quote)
        "x7,6,4.0,100",  # 11 bad userId
        "7,6,4.0,yesterday",  # 12 bad timestamp
        b"7,6,4.0,1\xff00",  # 13 not UTF-8
        "",  # 14 blank: passed over
        "8,2,nan,100",  # 15 user 8: nothing valid
        "7,7,inf,100",  # 16 out of range
        "7,6,5,100",  # 17 ok (whole stars may be written without ".0")
    ]
    folder = movielens(ratings=rows)
    expected = {
        2: ("invalid_field", "7", "2", "rating 6.0 is out of range (0.5 to 5 stars); rating left out"),
        3: ("invalid_field", "7", "3", "rating 0 is out of range"),
        4: ("invalid_field", "7", "4", "rating 3.3 is not a whole or half star"),
        5: ("invalid_field", "7", "5", "rating 'good' is not a number"),
        6: ("unknown_item", "7", "99", "movieId 99 is not in movies.csv"),
        7: ("duplicate_example", "7", "1", "movie 1 rated twice by this user (first at line 1)"),
        8: ("missing_field", None, None, "has 3 of the 4 columns userId,movieId,rating,timestamp (no 'timestamp')"),
        9: ("malformed_line", None, None, "has 5 columns, expected 4"),
        10: ("malformed_line", None, None, "malformed CSV line"),
        11: ("invalid_field", None, None, "userId must be a positive integer, got 'x7'"),
        12: ("invalid_field", "7", "6", "timestamp must be whole seconds since 1970"),
        13: ("malformed_line", None, None, "not valid UTF-8"),
        15: ("invalid_field", "8", "2", "rating nan is out of range"),
        16: ("invalid_field", "7", "7", "rating inf is out of range"),
    }
    with pytest.raises(DataError) as info:
        load_users("movielens-rating", folder)
    message = str(info.value)
    assert "ratings.csv.gz:2 (user 7, example 2): rating 6.0 is out of range (0.5 to 5 stars); rating left out" in (
        message)
    assert "on_bad_record='skip'" in message

    loaded = load_users("movielens-rating", folder, on_bad_record="skip")
    assert loaded.problems == info.value.problems
    by_line = {p.line: p for p in loaded.problems if p.kind != "no_valid_answers"}
    assert set(by_line) == set(expected)
    for line, (kind, user_id, example_id, words) in expected.items():
        problem = by_line[line]
        assert (problem.kind, problem.user_id, problem.example_id) == (kind, user_id, example_id), line
        assert words in problem.reason and Path(problem.file).name == "ratings.csv.gz"
    (empty,) = [p for p in loaded.problems if p.kind == "no_valid_answers"]
    assert (empty.line, empty.user_id) == (15, "8")
    assert "none valid of its 1 rating(s)" in empty.reason
    assert loaded.user_ids == ["7"]
    assert loaded.get("7").example_ids == ("1", "6")
    assert [e.rating for e in loaded.get("7").examples] == [4.0, 5.0]


def test_bad_movies_are_named_and_their_ratings_too(movielens):
    movies = [
        "1,Synthetic Story (1995),Comedy",  # 1 ok
        "2,,Drama",  # 2 empty title
        "x3,Synthetic Three (1990),Drama",  # 3 bad movieId
        "1,Synthetic Again (1996),Drama",  # 4 repeats movie 1 (the first stays)
        "4,Synthetic Four (1997)",  # 5 missing genres column
        "5,Synthetic Five (1998),",  # 6 empty genres
    ]
    folder = movielens(ratings=["7,1,4.0,1", "7,2,3.0,1", "7,5,3.0,1"], movies=movies)
    loaded = load_users("movielens-rating", folder, on_bad_record="skip")
    found = {(Path(p.file).name, p.line): p for p in loaded.problems}
    assert {key: (p.kind, p.example_id) for key, p in found.items()} == {
        ("movies.csv", 2): ("missing_field", "2"),
        ("movies.csv", 3): ("invalid_field", None),
        ("movies.csv", 4): ("duplicate_example", "1"),
        ("movies.csv", 5): ("missing_field", None),
        ("movies.csv", 6): ("missing_field", "5"),
        ("ratings.csv.gz", 2): ("unknown_item", "2"),
        ("ratings.csv.gz", 3): ("unknown_item", "5"),
    }
    assert "title is empty" in found["movies.csv", 2].reason
    assert "movieId 1 repeats line 1" in found["movies.csv", 4].reason
    assert "movieId 2 has no usable movie (movies.csv:2 is bad)" in found["ratings.csv.gz", 2].reason
    assert [e.title for e in loaded.get("7").examples] == ["Synthetic Story"]
    with pytest.raises(DataError, match=r"movies\.csv:3: movieId must be a positive integer, got 'x3'"):
        load_users("movielens-rating", folder)


# -- tagging task --------------------------------------------------------------------------------------------------


def test_tag_records_labels_and_exclusions(movielens):
    tags = [
        "7,1,Comedy,300",  # movie 1: comedy (later) ...
        "7,1,fantasy,200",  # ... and fantasy (earlier): the label
        "7,1,Pixar,100",  # outside the vocabulary
        "7,2,twist ending,400",
        "7,2,Twist-Ending,401",  # the same vocabulary tag again: a duplicate (reported)
        "7,6,sci fi,500",
        '7,5,"romance, sort of",500',  # outside (a comma inside quotes)
        "7,3,action,600",  # movie 3: action and romance at the same second: vocabulary order decides
        "7,3,romance,600",
        "9,1,funny,1",  # user 9: nothing in the vocabulary
        "9,2,great,2",
    ]
    folder = movielens(tags=tags)
    loaded = load_users("movielens-tag", folder, on_bad_record="skip")
    assert loaded.dataset == "movielens_tag" and loaded.path.name == "tags.csv"
    assert loaded.user_ids == ["7"]
    user = loaded[0]
    assert user.profile is None and user.source == "movielens_tag"
    assert user.example_ids == ("1", "2", "6", "3")
    assert [e.tag for e in user.examples] == ["fantasy", "twist ending", "sci-fi", "action"]
    assert user.meta == {
        "movielens_user_id": 7,
        "n_tag_applications": 6,
        "tags": {"1": ["fantasy", "comedy"], "2": ["twist ending"], "6": ["sci-fi"], "3": ["action", "romance"]},
    }
    for example in user.examples:
        assert set(example.inputs().keys()) == {"title", "year", "genres", "options"}
        assert set(example.labels().keys()) == {"tag"}
        assert example.options == list(LAMP2_TAGS) and example.tag in example.options
    assert user.examples[0].toDict()["title"] == "Synthetic Story"

    # tags.csv has a header: data starts at line 2.
    (duplicate,) = loaded.problems
    assert (duplicate.line, duplicate.kind, duplicate.user_id, duplicate.example_id) == (
        6, "duplicate_example", "7", "2")
    assert "tag 'twist ending' applied again to movie 2 by this user (first at line 5, here as 'Twist-Ending')" in (
        duplicate.reason)
    excluded = {p.user_id: p for p in loaded.excluded}
    assert {p.kind for p in loaded.excluded} == {"out_of_vocabulary"}
    assert "left out 2 tag application(s) that are not among LaMP-2's 15 tags" in excluded["7"].reason
    assert "none of the user's 2 valid tag application(s) is one of LaMP-2's 15 tags" in excluded["9"].reason
    assert excluded["9"].line == 11


def test_tag_bad_records(movielens):
    tags = [
        "7,1,comedy,1",  # 2 ok
        "7,99,comedy,1",  # 3 no such movie
        "7,2,,1",  # 4 empty tag
        "7,2,comedy",  # 5 missing column
        "0,2,comedy,1",  # 6 bad userId
        "8,2,action,soon",  # 7 user 8: nothing valid
    ]
    folder = movielens(tags=tags)
    with pytest.raises(DataError) as info:
        load_users("movielens-tag", folder)
    assert "tags.csv:3 (user 7, example 99): movieId 99 is not in movies.csv; tag application left out" in str(
        info.value)
    loaded = load_users("movielens-tag", folder, on_bad_record="skip")
    assert {(p.line, p.kind) for p in loaded.problems} == {
        (3, "unknown_item"), (4, "missing_field"), (5, "missing_field"), (6, "invalid_field"), (7, "invalid_field"),
        (7, "no_valid_answers")}
    assert loaded.user_ids == ["7"] and loaded[0].example_ids == ("1",)


def test_tag_sample_cap_keeps_meta_in_step(movielens):
    folder = movielens(tags=[f"7,{m},comedy,{m}" for m in range(1, 9)] + ["7,1,action,0"])
    loaded = load_users("movielens-tag", folder, max_examples=3)
    user = loaded[0]
    assert len(user) == 3 and set(user.meta["tags"]) == set(user.example_ids)
    assert user.meta["n_tag_applications"] == 9
    assert [p.kind for p in loaded.excluded] == ["sampled_out"]


# -- splits, validation and the run's input preparation -------------------------------------------------------------


def test_splits_of_rating_users_are_seeded_and_disjoint(movielens):
    folder = movielens(ratings=_ratings(7, range(1, 9)))
    record = load_users("movielens-rating", folder)[0]
    split = split_user(record, n_train=3, n_test=4, seed=1)
    assert not set(split.train_ids) & set(split.test_ids)
    assert len(split.train) == 3 and len(split.test) == 4 and split.profile is None
    assert split_user(record, n_train=3, n_test=4, seed=1).train_ids == split.train_ids
    assert all(isinstance(e.rating, float) for e in split.train + split.test)


def test_validation_accepts_ratings_without_options_and_checks_tags_against_options(movielens):
    rating_student = dspy.Predict("title, year: int | None, genres: list[str] -> rating: float")
    tag_student = dspy.Predict("title, year: int | None, genres: list[str], options: list[str] -> tag")
    folder = movielens(ratings=_ratings(7, [1, 2, 3]), tags=["7,1,comedy,1", "7,2,action,2"])
    ratings = list(load_users("movielens-rating", folder)[0].examples)
    tags = list(load_users("movielens-tag", folder)[0].examples)
    validate_examples(ratings, name="trainset", student=rating_student, min_size=2)
    validate_examples(tags, name="trainset", student=tag_student, min_size=2)
    with pytest.raises(ValueError, match=r"missing the student's input field\(s\) \['options'\]"):
        validate_examples(ratings, name="trainset", student=tag_student)
    bad = dspy.Example(title="Synthetic", year=None, genres=[], options=list(LAMP2_TAGS), tag="horror").with_inputs(
        "title", "year", "genres", "options")
    with pytest.raises(ValueError, match=r"trainset\[0\] \(title='Synthetic'\): tag 'horror' is not among its options"):
        validate_examples([bad], name="trainset", student=tag_student)


@pytest.mark.parametrize("dataset", ["movielens-rating", "movielens-tag"])
def test_prepare_users_splits_movielens(movielens, dataset):
    folder = movielens(
        ratings=[*_ratings(7, range(1, 9)), *_ratings(9, [1, 2])],
        tags=[*(f"7,{m},comedy,{m}" for m in range(1, 9)), "9,1,action,1"],
    )
    users, source = prepare_users(dataset, data_path=folder, n_train=3, n_test=4, seed=0)
    assert [u.user_id for u in users] == ["7"]
    (user,) = users
    assert len(user.train) == 3 and len(user.test) == 4 and user.profile is None
    assert source.dataset == canonical_dataset(dataset)
    assert [(p.user_id, p.kind) for p in source.excluded] == [("9", "too_few_examples")]
    label = "rating" if dataset == "movielens-rating" else "tag"
    assert all(set(e.labels().keys()) == {label} for e in user.train + user.test)
