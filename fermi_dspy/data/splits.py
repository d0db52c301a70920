"""Deterministic per-user train/test splits."""

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import dspy

from fermi_dspy.data.records import UserRecord


@dataclass(frozen=True)
class UserSplit:
    """One user's training and test examples.

    Attributes:
        user_id: The user.
        profile: The user's profile (as in the record).
        train: Training examples (for the optimizer).
        test: Held-out examples, disjoint from `train`.
        train_ids: Example ids of `train`, same order.
        test_ids: Example ids of `test`, same order.
        seed: The seed the split was drawn with.
        source: The data set of the record.
    """

    user_id: str
    profile: dict[str, str] | None
    train: list[dspy.Example]
    test: list[dspy.Example]
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    seed: int
    source: str = ""


def _sort_key(seed: int, user_id: str, example_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\x1f{user_id}\x1f{example_id}".encode()).digest()


def _n_train(n_train: int | float | None, n: int, user_id: str, n_test: int | None) -> int:
    if n_train is None:
        if n_test is None:
            raise ValueError("n_train=None (every answer not held out) needs a fixed n_test.")
        if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 0:
            raise ValueError(f"n_test must be a non-negative int, got {n_test!r}.")
        return max(0, n - n_test)
    if isinstance(n_train, bool):
        raise TypeError(f"n_train must be an int or a float fraction, got {n_train!r}.")
    if isinstance(n_train, int):
        if n_train < 0:
            raise ValueError(f"n_train must be >= 0, got {n_train}.")
        return n_train
    if isinstance(n_train, float):
        if not 0.0 < n_train < 1.0:
            raise ValueError(
                f"a float n_train is a fraction of the user's examples and must be in (0, 1), got {n_train}."
            )
        return math.floor(n_train * n + 0.5)
    raise TypeError(f"n_train must be an int or a float fraction, got {type(n_train).__name__} for user {user_id}.")


def split_user(record: UserRecord, *, n_train: int | float | None, n_test: int | None = None,
               seed: int = 0) -> UserSplit:
    """Split one user's examples into train and test, deterministically.

    Each example gets a pseudo-random key from `sha256(seed, user_id, example_id)`; examples are ordered by key,
    `train` is the first `n_train` and `test` the last `n_test` (all the rest if `n_test` is None). So the split
    depends only on the seed, the user id and that user's example ids: not on other users, the order of users or
    examples, or the Python hash seed. For a fixed `n_test`, growing `n_train` keeps the test set fixed and the
    smaller training set a prefix of the larger one. Both lists are in key order (shuffled, reproducibly).

    With `n_train=None` (every answer not held out), a user who gives more answers keeps every earlier training
    answer in training: a new answer can only push a test answer into training, never the reverse. That is the split
    under which a user's program can be updated from new answers (`Fermi.compile(..., init=...)`).

    Args:
        record: The user.
        n_train: Number of training examples, a float in (0, 1): that fraction of the user's examples (rounded
            half up), or None: every example not in the test set (needs `n_test`).
        n_test: Number of test examples; None for every example not in train.
        seed: The split seed.

    Returns:
        The split.

    Raises:
        ValueError: The user has fewer examples than `n_train + n_test`, or an argument is out of range.
        TypeError: `n_train` or `n_test` has the wrong type.
    """
    n = len(record.examples)
    k = _n_train(n_train, n, record.user_id, n_test)
    if n_test is not None and (isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 0):
        raise ValueError(f"n_test must be a non-negative int or None, got {n_test!r}.")
    wanted = k + (n_test or 0)
    if wanted > n or k > n:
        rest = f"; pass n_test=None to use the remaining {n - k}" if n_test is not None and k <= n else ""
        raise ValueError(
            f"user {record.user_id} has {n} examples, too few for n_train={k} + n_test={n_test or 0}{rest}, "
            "or load users with min_examples=n_train+n_test."
        )
    order = sorted(range(n), key=lambda i: _sort_key(seed, record.user_id, record.example_ids[i]))
    train_idx = order[:k]
    test_idx = order[k:] if n_test is None else order[n - n_test :]
    return UserSplit(
        user_id=record.user_id,
        profile=record.profile,
        train=[record.examples[i] for i in train_idx],
        test=[record.examples[i] for i in test_idx],
        train_ids=tuple(record.example_ids[i] for i in train_idx),
        test_ids=tuple(record.example_ids[i] for i in test_idx),
        seed=seed,
        source=record.source,
    )


def split_users(
    records: Iterable[UserRecord], *, n_train: int | float | None, n_test: int | None = None, seed: int = 0
) -> list[UserSplit]:
    """`split_user` for each record (same arguments); each user's split is independent of the others."""
    return [split_user(r, n_train=n_train, n_test=n_test, seed=seed) for r in records]
