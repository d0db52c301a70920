"""Choose the benchmark's users and split each one once: every method sees exactly these splits.

Users with too few valid answers for the split are listed as excluded (never dropped silently), and so are the bad
records the loader skipped. What the report needs of the users is `splits.json` (`BenchmarkUsers.manifest`): ids
and sizes only, no profile and no answer, so a run directory's report can be rebuilt without the data.
"""

import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fermi_dspy.data import UserRecord, UserSplit, load_users, split_user
from fermi_dspy.runs import UserData
from programs.benchmark.settings import BenchmarkSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkUsers:
    """The users every method runs on, and everything left out.

    Attributes:
        manifest: What splits.json holds: the data set, how many users were eligible, the excluded users with the
            reason, the bad records skipped, and each chosen user's split as example ids.
        users: The chosen users' data, in file order (empty when read back from splits.json).
        path: The data file (empty when read back from splits.json).
    """

    manifest: dict[str, Any]
    users: tuple[UserData, ...] = ()
    path: str = ""

    @property
    def user_ids(self) -> list[str]:
        return [u["user_id"] for u in self.manifest["users"]]

    @property
    def dataset(self) -> str:
        return self.manifest["dataset"]

    @property
    def eligible(self) -> int:
        return self.manifest["eligible_users"]

    @property
    def excluded(self) -> list[dict[str, str]]:
        return self.manifest["excluded_users"]

    @property
    def skipped(self) -> int:
        return self.manifest["skipped_records"]


def split_fingerprint(split: UserSplit) -> str:
    """A short hash of a split's train and test example ids, so two runs can check they used the same split."""
    text = "\x1f".join([split.user_id, *split.train_ids, "|", *split.test_ids])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def choose_records(records: Sequence[UserRecord], settings: BenchmarkSettings) -> list[UserRecord]:
    """The users to run: the first ones, or a seeded random sample kept in file order."""
    if settings.user_sample == "first" or len(records) <= settings.users:
        return list(records[: settings.users])
    chosen = set(random.Random(settings.seed).sample(range(len(records)), settings.users))
    return [r for i, r in enumerate(records) if i in chosen]


def benchmark_users(settings: BenchmarkSettings) -> BenchmarkUsers:
    """Load the data set, choose the users and split each one (seeded, the same for every method).

    Raises:
        ValueError: No user has enough answers for the split.
    """
    loaded = load_users(settings.dataset, settings.data_path, on_bad_record="skip")
    needed = settings.n_train + settings.n_test
    eligible = [r for r in loaded.records if len(r) >= needed]
    excluded = [{"user_id": r.user_id, "reason": f"only {len(r)} valid answers, fewer than {settings.n_train} train "
                 f"+ {settings.n_test} test"} for r in loaded.records if len(r) < needed]
    if not eligible:
        raise ValueError(f"No user in {loaded.path} has {needed} valid answers; lower --train/--test.")
    splits = [split_user(r, n_train=settings.n_train, n_test=settings.n_test, seed=settings.seed)
              for r in choose_records(eligible, settings)]
    if excluded:
        logger.warning("%d user(s) excluded for too few answers: %s", len(excluded),
                       ", ".join(f"{e['user_id']} ({e['reason']})" for e in excluded[:5]))
    manifest = {
        "dataset": loaded.dataset,
        "eligible_users": len(eligible),
        "excluded_users": excluded,
        "skipped_records": len(loaded.problems),
        "users": [{"user_id": s.user_id, "seed": s.seed, "n_train": len(s.train), "n_test": len(s.test),
                   "split_sha256": split_fingerprint(s), "train_ids": list(s.train_ids), "test_ids": list(s.test_ids)}
                  for s in splits],
    }
    users = tuple(UserData(s.user_id, s.train, s.test, s.profile, loaded.path.name) for s in splits)
    return BenchmarkUsers(manifest, users, str(loaded.path))
