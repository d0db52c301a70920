"""Schema, counts and invariants on the REAL data files in ../shared/data (no exact user counts: part of each data
set is held aside, see ../shared/data/README.md)."""

import json
from collections import Counter

import dspy
import pytest

from fermi_dspy.data import DataError, UserRecord, load_users
from fermi_dspy.data.globalopinionqa import is_non_answer
from fermi_dspy.data.opinionqa import ATTRIBUTE_NAMES

# The 12 OpinionQA attributes, under the readable names the loader gives their ATP codes.
OPINIONQA_ATTRIBUTES = set(ATTRIBUTE_NAMES.values())


def _raw(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _check_examples(record: UserRecord) -> None:
    assert len(record.examples) == len(record.example_ids) > 0
    assert len(set(record.example_ids)) == len(record.example_ids)
    for example in record.examples:
        assert isinstance(example, dspy.Example)
        assert set(example.keys()) == {"question", "options", "answer"}
        assert set(example.inputs().keys()) == {"question", "options"}
        assert set(example.labels().keys()) == {"answer"}
        assert isinstance(example.question, str) and example.question
        assert isinstance(example.options, list) and len(example.options) >= 2
        assert all(isinstance(o, str) for o in example.options)
        assert example.answer in example.options


def _check_isolated(records: list[UserRecord]) -> None:
    """No Example or options list is shared between users."""
    seen_examples: dict[int, str] = {}
    seen_options: dict[int, str] = {}
    for record in records:
        for example in record.examples:
            assert seen_examples.setdefault(id(example), record.user_id) == record.user_id
            assert seen_options.setdefault(id(example.options), record.user_id) == record.user_id


@pytest.fixture(scope="module")
def panelists(data_dir):
    return load_users("panelists")


@pytest.fixture(scope="module")
def hwang(data_dir):
    return load_users("hwang", on_bad_record="skip")


@pytest.fixture(scope="module")
def countries(data_dir):
    return load_users("global")


def test_panelists(panelists):
    assert panelists.dataset == "opinionqa_panelists"
    assert panelists.problems == [] and panelists.excluded == []
    assert 1 <= len(panelists) <= 10  # README: 7 here, 10 in the source
    assert len(set(panelists.user_ids)) == len(panelists)
    for record in panelists:
        assert record.source == "opinionqa_panelists"
        assert set(record.profile) == OPINIONQA_ATTRIBUTES
        assert all(isinstance(v, str) and v for v in record.profile.values())
        assert 900 <= len(record) <= 1100  # README: 959-1075 per user
        _check_examples(record)
    _check_isolated(panelists.records)
    assert any(e.answer == "Refused" for r in panelists for e in r.examples)  # refusals are kept by default


def test_panelists_match_their_own_raw_line(panelists):
    """Each user's examples are exactly that user's raw answers (no mixing between users)."""
    raw = {row["user_id"]: row for row in _raw(panelists.path)}
    for record in panelists:
        answers = raw[record.user_id]["answers"]
        assert record.example_ids == tuple(a["qid"] for a in answers)
        assert [e.answer for e in record.examples] == [a["answer"] for a in answers]
        assert record.profile == {ATTRIBUTE_NAMES[k]: v for k, v in raw[record.user_id]["profile"].items()}
        assert raw[record.user_id]["n_answers"] == len(record)


def test_panelists_drop_refused(panelists):
    dropped = load_users("panelists", drop_refused=True)
    n_refused = {r.user_id: sum(e.answer == "Refused" for e in r.examples) for r in panelists}
    for record in dropped:
        assert all(e.answer != "Refused" for e in record.examples)
        assert len(record) == len(panelists.get(record.user_id)) - n_refused[record.user_id]
    listed = {p.user_id: p.reason for p in dropped.excluded}
    assert set(listed) == {u for u, n in n_refused.items() if n}
    for user_id, reason in listed.items():
        assert f"left out {n_refused[user_id]} 'Refused'" in reason


def test_hwang(hwang):
    assert hwang.dataset == "opinionqa_hwang"
    assert 100 <= len(hwang) <= 525  # README: 450 here (30 users x 15 topics), 35 x 15 in the source
    assert len(set(hwang.user_ids)) == len(hwang)
    topics = Counter(r.meta["topic"] for r in hwang)
    assert len(topics) == 15
    for record in hwang:
        assert record.source == "opinionqa_hwang"
        assert set(record.profile) <= {"Political party", "Political ideology"} and record.profile
        assert 25 <= len(record) <= 30
        assert record.user_id.endswith(f"-{record.meta['hwang_user_id']}")
        _check_examples(record)
    _check_isolated(hwang.records)


def test_hwang_nothing_dropped_silently(hwang):
    """Every raw answer is either loaded or listed as a problem; the only problems are null answers."""
    raw_answers = sum(len(row["answers"]) for row in _raw(hwang.path))
    assert sum(len(r) for r in hwang) + len(hwang.problems) == raw_answers
    assert len(hwang.problems) <= 10  # README: 2 of the answers are "UNKNOWN" -> null
    assert all(p.kind == "null_answer" and p.example_id and p.user_id for p in hwang.problems)
    if hwang.problems:
        with pytest.raises(DataError, match=r"records\.jsonl:\d+ \(user .*\): 'answer' is null"):
            load_users("hwang")


def test_global(countries):
    assert countries.dataset == "globalopinionqa"
    assert countries.problems == []
    raw = _raw(countries.path)
    assert len(countries) == len({row["country"] for row in raw})
    assert 50 <= len(countries) <= 130  # README: 118 here, 130 in the source
    assert sum(len(r) for r in countries) == len(raw)
    for record in countries:
        assert record.source == "globalopinionqa"
        assert set(record.profile) == {"Country"}
        assert record.meta == {"country": record.profile["Country"]}
        _check_examples(record)
        assert set(record.distributions) == set(record.example_ids)
        for example_id, example in zip(record.example_ids, record.examples, strict=True):
            shares = record.distributions[example_id]
            assert len(shares) == len(example.options)
            assert shares[example.options.index(example.answer)] == max(shares)
            assert sum(shares) == pytest.approx(1.0, abs=0.01)
    _check_isolated(countries.records)
    by_name = {r.profile["Country"]: r for r in countries}
    for row in raw[:: max(1, len(raw) // 200)]:
        record = by_name[row["country"]]
        answers = {e.question: e.answer for e in record.examples}
        assert answers[row["question"]] == row["argmax_option"]


def test_global_question_ids_shared_across_countries(countries):
    ids = Counter(i for r in countries for i in r.example_ids)
    assert max(ids.values()) > 1  # the same question (and options) has the same id in every country


def test_global_min_examples(countries):
    loaded = load_users("global", min_examples=30)
    assert all(len(r) >= 30 for r in loaded)
    too_few = {r.user_id for r in countries if len(r) < 30}
    assert {p.user_id for p in loaded.excluded} == too_few
    assert all(p.kind == "too_few_examples" for p in loaded.excluded)
    assert len(loaded) + len(too_few) == len(countries)


def test_global_drop_refused(countries):
    dropped = load_users("global", drop_refused=True)
    non_answers = {"DK/Refused", "Don't know", "Don't know/Refused", "No answer", "Refused"}
    assert all(e.answer not in non_answers for r in dropped for e in r.examples)
    n_non_answers = sum(is_non_answer(e.answer) for r in countries for e in r.examples)
    assert n_non_answers > 0
    assert sum(len(r) for r in dropped) == sum(len(r) for r in countries) - n_non_answers
    assert dropped.excluded and all(p.kind == "refused_dropped" for p in dropped.excluded)
