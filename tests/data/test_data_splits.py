"""Deterministic per-user splits."""

import os
import pathlib
import subprocess
import sys

import pytest

from fermi_dspy.data import UserRecord, load_users, make_example, split_user, split_users


def synthetic_record(user_id: str = "synthetic-user", n: int = 30) -> UserRecord:
    """A SYNTHETIC user with n answers (not real data)."""
    examples = tuple(
        make_example(f"Synthetic question {i}?", ["Yes", "No"], "Yes" if i % 3 else "No") for i in range(n)
    )
    return UserRecord(user_id, {"AGE": "18-29"}, examples, tuple(f"Q{i}" for i in range(n)), "synthetic")


def _reordered(record: UserRecord, order: list[int]) -> UserRecord:
    return UserRecord(
        record.user_id,
        record.profile,
        tuple(record.examples[i] for i in order),
        tuple(record.example_ids[i] for i in order),
        record.source,
    )


def test_sizes_disjoint_and_fields():
    record = synthetic_record()
    split = split_user(record, n_train=10, n_test=20, seed=3)
    assert len(split.train) == len(split.train_ids) == 10
    assert len(split.test) == len(split.test_ids) == 20
    assert not set(split.train_ids) & set(split.test_ids)
    assert set(split.train_ids) | set(split.test_ids) == set(record.example_ids)
    assert (split.user_id, split.profile, split.seed, split.source) == (
        "synthetic-user",
        {"AGE": "18-29"},
        3,
        "synthetic",
    )
    index = dict(zip(record.example_ids, record.examples, strict=True))
    assert [index[i] for i in split.train_ids] == split.train
    assert [index[i] for i in split.test_ids] == split.test


def test_same_seed_same_split_different_seed_different():
    record = synthetic_record()
    a = split_user(record, n_train=10, seed=0)
    b = split_user(record, n_train=10, seed=0)
    c = split_user(record, n_train=10, seed=1)
    assert (a.train_ids, a.test_ids) == (b.train_ids, b.test_ids)
    assert a.train_ids != c.train_ids
    assert len(a.test_ids) == 20  # n_test=None: the rest


def test_pinned_ids_do_not_depend_on_process_or_hash_seed():
    """The split is a pure function of (seed, user_id, example ids): same result in a fresh process."""
    split = split_user(synthetic_record(), n_train=5, n_test=5, seed=0)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]);"
        "from test_data_splits import synthetic_record; from fermi_dspy.data import split_user;"
        "s = split_user(synthetic_record(), n_train=5, n_test=5, seed=0); print(','.join(s.train_ids + s.test_ids))"
    )
    here = pathlib.Path(__file__).parent
    repo = here.parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code, str(here), str(repo)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    assert out.stdout.strip().splitlines()[-1] == ",".join(split.train_ids + split.test_ids)


def test_independent_of_other_users_and_of_example_order():
    record = synthetic_record("u-b")
    alone = split_user(record, n_train=10, n_test=10, seed=7)
    together = split_users([synthetic_record("u-a"), record, synthetic_record("u-c")], n_train=10, n_test=10, seed=7)
    assert together[1].train_ids == alone.train_ids and together[1].test_ids == alone.test_ids
    shuffled = _reordered(record, list(reversed(range(len(record)))))
    again = split_user(shuffled, n_train=10, n_test=10, seed=7)
    assert (again.train_ids, again.test_ids) == (alone.train_ids, alone.test_ids)
    # Two users with the same example ids do not get the same split.
    assert split_user(synthetic_record("u-a"), n_train=10, seed=7).train_ids != alone.train_ids


def test_nested_train_and_fixed_test():
    record = synthetic_record()
    small = split_user(record, n_train=5, n_test=10, seed=0)
    large = split_user(record, n_train=15, n_test=10, seed=0)
    assert large.train_ids[:5] == small.train_ids
    assert large.test_ids == small.test_ids


def test_fraction_and_zero():
    record = synthetic_record(n=10)
    assert len(split_user(record, n_train=0.25).train) == 3  # 2.5 rounds half up
    assert len(split_user(record, n_train=0.5).test) == 5
    zero = split_user(record, n_train=0, n_test=4)
    assert zero.train == [] and len(zero.test) == 4


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_train": 10, "n_test": 25}, ValueError, "has 30 examples, too few .* n_test=None to use the remaining 20"),
        ({"n_train": 31}, ValueError, "too few"),
        ({"n_train": 1.0}, ValueError, r"in \(0, 1\)"),
        ({"n_train": -1}, ValueError, ">= 0"),
        ({"n_train": True}, TypeError, "int or a float"),
        ({"n_train": "10"}, TypeError, "int or a float"),
        ({"n_train": 5, "n_test": -1}, ValueError, "n_test"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        split_user(synthetic_record(), **kwargs)


def test_record_rejects_repeated_ids():
    example = make_example("q?", ["a", "b"], "a")
    with pytest.raises(ValueError, match="duplicate example ids"):
        UserRecord("u", None, (example, example), ("Q1", "Q1"), "synthetic")


def test_real_hwang_splits_are_stable_under_limit(data_dir):
    """A user's split is the same whether it is loaded alone (limit) or with every other user."""
    everyone = load_users("hwang", on_bad_record="skip")
    first = load_users("hwang", on_bad_record="skip", limit=3)
    for record in first:
        a = split_user(record, n_train=10, n_test=20, seed=0)
        b = split_user(everyone.get(record.user_id), n_train=10, n_test=20, seed=0)
        assert (a.train_ids, a.test_ids) == (b.train_ids, b.test_ids)
