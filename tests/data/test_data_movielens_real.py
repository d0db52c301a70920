"""The MovieLens loaders on the REAL files in ../shared/data/movielens_ml_latest_small (skipped when absent): every
raw rating or in-vocabulary tag application is accounted for, labels are in range / in the vocabulary, and splits
are seeded and disjoint. Counts are bounds, not exact (see ../shared/data/README.md)."""

import csv
import gzip
import re
from collections import Counter

import pytest

from fermi_dspy.data import LAMP2_TAGS, load_users, split_user
from fermi_dspy.data.movielens import DEFAULT_MAX_EXAMPLES, MOVIELENS_DIR


def _raw_rows(path, header: bool):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[1:] if header else rows


def _vocabulary_key(text: str) -> str:
    return " ".join(text.lower().replace("-", " ").replace("_", " ").split())


@pytest.fixture(scope="module")
def ratings(data_dir):
    if not (data_dir / MOVIELENS_DIR).is_dir():
        pytest.skip(f"real data not available: no {MOVIELENS_DIR}/ in {data_dir}")
    return load_users("movielens-rating")  # on_bad_record="raise": the real file has no bad record


@pytest.fixture(scope="module")
def tags(data_dir):
    if not (data_dir / MOVIELENS_DIR).is_dir():
        pytest.skip(f"real data not available: no {MOVIELENS_DIR}/ in {data_dir}")
    return load_users("movielens-tag")


def test_raters(ratings):
    assert ratings.dataset == "movielens_rating" and ratings.problems == []
    assert 300 <= len(ratings) <= 706  # README: 706 raters
    assert len(set(ratings.user_ids)) == len(ratings)
    for record in ratings:
        assert record.profile is None and record.source == "movielens_rating"
        assert record.meta["n_ratings"] >= 20  # GroupLens: every selected user rated at least 20 movies
        assert len(record) == min(record.meta["n_ratings"], DEFAULT_MAX_EXAMPLES)
        assert len(set(record.example_ids)) == len(record)
        for example in record.examples:
            assert set(example.inputs().keys()) == {"title", "year", "genres"}
            assert set(example.labels().keys()) == {"rating"}
            assert isinstance(example.rating, float) and 0.5 <= example.rating <= 5.0
            assert example.rating * 2 == int(example.rating * 2)
            assert isinstance(example.title, str) and example.title and not re.search(r"\(\d{4}\)$", example.title)
            assert example.year is None or 1880 <= example.year <= 2016
            assert isinstance(example.genres, list) and "(no genres listed)" not in example.genres
    sampled = {p.user_id for p in ratings.excluded}
    assert {p.kind for p in ratings.excluded} == {"sampled_out"}
    assert sampled == {r.user_id for r in ratings if r.meta["n_ratings"] > DEFAULT_MAX_EXAMPLES}


def test_every_raw_rating_is_loaded_and_matches(ratings):
    raw = _raw_rows(ratings.path, header=False)  # NOTE.md: this copy of ratings.csv has no header row
    assert sum(r.meta["n_ratings"] for r in ratings) == len(raw)
    assert Counter(row[0] for row in raw) == {r.user_id: r.meta["n_ratings"] for r in ratings}
    by_key = {(row[0], row[1]): float(row[2]) for row in raw}
    for record in ratings.records[:: max(1, len(ratings) // 40)]:
        for example_id, example in zip(record.example_ids, record.examples, strict=True):
            assert by_key[record.user_id, example_id] == example.rating


def test_uncapped_ratings(ratings):
    full = load_users("movielens-rating", max_examples=None, limit=5)
    for record in full:
        assert len(record) == record.meta["n_ratings"] == ratings.get(record.user_id).meta["n_ratings"]
        assert set(ratings.get(record.user_id).example_ids) <= set(record.example_ids)


def test_enough_raters_for_a_benchmark(ratings):
    qualifying = load_users("movielens-rating", min_examples=30)
    assert len(qualifying) >= 20
    assert all(len(r) >= 30 for r in qualifying)
    assert {p.user_id for p in qualifying.excluded if p.kind == "too_few_examples"} == {
        r.user_id for r in ratings if len(r) < 30}


def test_rating_splits_are_seeded_and_disjoint(ratings):
    for record in ratings.records[:20]:
        split = split_user(record, n_train=10, n_test=10, seed=0)
        assert not set(split.train_ids) & set(split.test_ids)
        assert split_user(record, n_train=10, n_test=10, seed=0).test_ids == split.test_ids
    moved = [split_user(r, n_train=10, n_test=10, seed=1).test_ids != split_user(r, n_train=10, n_test=10,
                                                                                  seed=0).test_ids
             for r in ratings.records[:20]]
    assert all(moved)


def test_taggers(tags):
    assert tags.dataset == "movielens_tag" and tags.problems == []
    assert 1 <= len(tags) <= 37  # README/NOTE: 37 taggers, 15 of them use LaMP-2's tags
    for record in tags:
        assert record.profile is None and record.source == "movielens_tag"
        assert set(record.meta["tags"]) == set(record.example_ids)
        for example_id, example in zip(record.example_ids, record.examples, strict=True):
            assert set(example.inputs().keys()) == {"title", "year", "genres", "options"}
            assert set(example.labels().keys()) == {"tag"}
            assert example.options == list(LAMP2_TAGS)
            assert example.tag in LAMP2_TAGS
            movie_tags = record.meta["tags"][example_id]
            assert movie_tags[0] == example.tag and len(set(movie_tags)) == len(movie_tags)
            assert set(movie_tags) <= set(LAMP2_TAGS)


def test_every_vocabulary_tag_application_is_loaded(tags):
    raw = _raw_rows(tags.path, header=True)  # tags.csv has a header row
    vocabulary = {_vocabulary_key(t) for t in LAMP2_TAGS}
    inside = [row for row in raw if _vocabulary_key(row[2]) in vocabulary]
    exact_ci = [row for row in raw if row[2].strip().lower() in LAMP2_TAGS]
    assert 200 <= len(inside) <= len(raw)
    assert len(inside) >= len(exact_ci)  # NOTE.md counts 281 applications with case-insensitive exact matching
    assert sum(r.meta["n_tag_applications"] for r in tags) == len(inside)
    assert {r.user_id for r in tags} == {row[0] for row in inside}
    assert {(r.user_id, i) for r in tags for i in r.example_ids} == {(row[0], row[1]) for row in inside}
    outside = Counter(row[0] for row in raw if _vocabulary_key(row[2]) not in vocabulary)
    listed = sum(int(re.search(r"(\d+) (?:valid )?tag application", p.reason).group(1)) for p in tags.excluded)
    assert listed == sum(outside.values())


def test_tag_splits_are_seeded_and_disjoint(tags):
    biggest = max(tags, key=len)
    assert len(biggest) >= 30
    split = split_user(biggest, n_train=10, n_test=20, seed=0)
    assert not set(split.train_ids) & set(split.test_ids)
    assert split_user(biggest, n_train=10, n_test=20, seed=0).train_ids == split.train_ids
    assert split_user(biggest, n_train=10, n_test=20, seed=5).train_ids != split.train_ids
