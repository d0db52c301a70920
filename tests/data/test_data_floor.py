"""Sanity floor on the real Hwang et al. records: "answer with the option position this user chose most often in
training" beats uniform random guessing, with 10 training / 20 test answers per user."""

import statistics
from collections import Counter

from fermi_dspy.data import load_users, split_user

REFUSED = "Refused"


def majority_position_floor(records, *, seed: int) -> tuple[float, float, float]:
    """Mean per-user test accuracy of the majority-position rule (ties -> lowest position), and of uniform random
    guessing over all options and over the options other than "Refused"."""
    position_acc, random_all, random_substantive = [], [], []
    for record in records:
        n_test = 20 if len(record) >= 30 else None  # users with a null answer dropped have 29: test on the rest
        split = split_user(record, n_train=10, n_test=n_test, seed=seed)
        counts = Counter(e.options.index(e.answer) for e in split.train)
        top = max(counts.values())
        position = min(p for p, c in counts.items() if c == top)
        position_acc.append(statistics.mean(e.options.index(e.answer) == position for e in split.test))
        random_all.append(statistics.mean(1 / len(e.options) for e in split.test))
        random_substantive.append(statistics.mean(1 / sum(o != REFUSED for o in e.options) for e in split.test))
    return statistics.mean(position_acc), statistics.mean(random_all), statistics.mean(random_substantive)


def test_majority_position_floor(data_dir, record_property):
    records = load_users("hwang", on_bad_record="skip").records
    results = [majority_position_floor(records, seed=seed) for seed in range(5)]
    position = statistics.mean(r[0] for r in results)
    random_all = statistics.mean(r[1] for r in results)
    random_substantive = statistics.mean(r[2] for r in results)
    record_property("majority_position_accuracy", round(position, 4))
    record_property("majority_position_accuracy_per_seed", [round(r[0], 4) for r in results])
    record_property("uniform_random_all_options", round(random_all, 4))
    record_property("uniform_random_without_refused", round(random_substantive, 4))
    print(
        f"\nHwang 10/20, seeds 0-4: majority position {position:.4f} "
        f"(per seed {[round(r[0], 4) for r in results]}); uniform random {random_all:.4f} over all options, "
        f"{random_substantive:.4f} over options other than 'Refused'"
    )
    assert 0.36 <= position <= 0.42
    assert 0.32 <= random_substantive <= 0.36
    assert 0.23 <= random_all <= 0.27
    assert all(r[0] > r[2] for r in results)
