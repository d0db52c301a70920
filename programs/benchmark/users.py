"""Choose the benchmark's users and split each one once: every method sees exactly these splits.

Users with too few valid answers for the split are listed as excluded (never dropped silently), and so are the bad
records the loader skipped.
"""

import hashlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from fermi_dspy.data import UserRecord, UserSplit, load_users, split_user
from programs.benchmark.settings import BenchmarkSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Exclusion:
    """A user (or a record) left out of the benchmark, and why."""

    user_id: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"user_id": self.user_id, "reason": self.reason}


@dataclass(frozen=True)
class BenchmarkUsers:
    """The users every method runs on, with their splits, and everything left out.

    Attributes:
        splits: One split per chosen user, in file order.
        excluded: Users with too few valid answers for the split.
        skipped_records: Bad records or answers the loader skipped (e.g. a null answer), as text.
        eligible: How many users had enough answers.
        dataset: The canonical data set name.
        path: The data file read.
    """

    splits: list[UserSplit]
    excluded: list[Exclusion] = field(default_factory=list)
    skipped_records: list[str] = field(default_factory=list)
    eligible: int = 0
    dataset: str = ""
    path: str = ""

    def manifest(self) -> dict[str, Any]:
        """The splits as ids only (no profile, no answer): what `splits.json` holds."""
        return {
            "dataset": self.dataset,
            "eligible_users": self.eligible,
            "excluded_users": [e.to_dict() for e in self.excluded],
            "skipped_records": len(self.skipped_records),
            "users": [
                {"user_id": s.user_id, "seed": s.seed, "n_train": len(s.train), "n_test": len(s.test),
                 "split_sha256": split_fingerprint(s), "train_ids": list(s.train_ids), "test_ids": list(s.test_ids)}
                for s in self.splits
            ],
        }


def split_fingerprint(split: UserSplit) -> str:
    """A short hash of a split's train and test example ids, so two runs can check they used the same split."""
    text = "\x1f".join([split.user_id, *split.train_ids, "|", *split.test_ids])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def choose_records(records: list[UserRecord], settings: BenchmarkSettings) -> list[UserRecord]:
    """The users to run: the first ones, or a seeded random sample kept in file order."""
    if settings.user_sample == "first" or len(records) <= settings.users:
        return records[: settings.users]
    rng = random.Random(settings.seed)
    chosen = set(rng.sample(range(len(records)), settings.users))
    return [r for i, r in enumerate(records) if i in chosen]


def benchmark_users(settings: BenchmarkSettings) -> BenchmarkUsers:
    """Load the data set, choose the users and split each one (seeded, the same for every method).

    Raises:
        ValueError: No user has enough answers for the split.
    """
    loaded = load_users(settings.dataset, settings.data_path, on_bad_record="skip")
    needed = settings.n_train + settings.n_test
    eligible = [r for r in loaded.records if len(r) >= needed]
    excluded = [Exclusion(r.user_id, f"only {len(r)} valid answers, fewer than {settings.n_train} train + "
                                     f"{settings.n_test} test") for r in loaded.records if len(r) < needed]
    if not eligible:
        raise ValueError(f"No user in {loaded.path} has {needed} valid answers; lower --train/--test.")
    chosen = choose_records(eligible, settings)
    splits = [split_user(r, n_train=settings.n_train, n_test=settings.n_test, seed=settings.seed) for r in chosen]
    if excluded:
        logger.warning("%d user(s) excluded for too few answers: %s", len(excluded),
                       ", ".join(f"{e.user_id} ({e.reason})" for e in excluded[:5]))
    return BenchmarkUsers(splits=splits, excluded=excluded, skipped_records=[str(p) for p in loaded.problems],
                          eligible=len(eligible), dataset=loaded.dataset, path=str(loaded.path))
