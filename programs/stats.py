"""Statistics over users: the mean with a percentile-bootstrap 95% CI, paired differences, and wins/ties/losses."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_ROUNDS = 10_000
TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class MeanCI:
    """A mean over users and its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": round(self.mean, 4), "ci_low": round(self.low, 4), "ci_high": round(self.high, 4),
                "users": self.n}


def bootstrap_ci(values: Sequence[float], *, seed: int = 0, rounds: int = BOOTSTRAP_ROUNDS,
                 level: float = 0.95) -> MeanCI:
    """The mean of `values` with a percentile-bootstrap confidence interval (resampling users with replacement).

    One value gives a zero-width interval; no values give NaNs.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0)
    mean = float(data.mean())
    if data.size == 1:
        return MeanCI(mean, mean, mean, 1)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(rounds, data.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return MeanCI(mean, float(low), float(high), int(data.size))


@dataclass(frozen=True)
class WinTieLoss:
    """How many users a method beats, ties and loses against the reference method (on per-user accuracy)."""

    wins: int
    ties: int
    losses: int

    def __str__(self) -> str:
        return f"{self.wins}/{self.ties}/{self.losses}"


def win_tie_loss(method: Mapping[str, float], reference: Mapping[str, float]) -> WinTieLoss:
    """Compare per-user accuracies on the users both have."""
    wins = ties = losses = 0
    for user_id in method.keys() & reference.keys():
        difference = method[user_id] - reference[user_id]
        if abs(difference) <= TIE_TOLERANCE:
            ties += 1
        elif difference > 0:
            wins += 1
        else:
            losses += 1
    return WinTieLoss(wins, ties, losses)


def paired_difference(method: Mapping[str, float], reference: Mapping[str, float], *, seed: int = 0) -> MeanCI:
    """Mean of (method - reference) over the users both have, with its bootstrap CI."""
    common = sorted(method.keys() & reference.keys())
    return bootstrap_ci([method[u] - reference[u] for u in common], seed=seed)
