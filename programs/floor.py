"""The LM-free floors: what a counter of the user's training answers predicts, with no LM.

* opinion questions: the option position this user chose most often (`MajorityPositionProgram`);
* MovieLens ratings: the user's mean rating, rounded to a whole star (`MeanRatingProgram`);
* MovieLens tags: the user's most frequent tag (`MostFrequentTagProgram`).

A method that does not beat its floor has learned nothing a counter could not.
"""

import math
from collections import Counter
from collections.abc import Sequence
from statistics import fmean

import dspy

from fermi_dspy.metrics import option_index


def position_counts(train: Sequence[dspy.Example]) -> Counter:
    """How often the user chose each option position (0 = first option) in their training answers."""
    counts: Counter = Counter()
    for example in train:
        index = option_index(example.answer, example.options)
        if index is not None:
            counts[index] += 1
    return counts


def favourite_position(counts: Counter, num_options: int) -> int:
    """The most chosen position that exists among `num_options` options; ties go to the lower position.

    Positions the user never chose, or a question with fewer options than every chosen position, fall back to
    position 0.
    """
    usable = [(count, -position) for position, count in counts.items() if position < num_options]
    if not usable:
        return 0
    return -max(usable)[1]


class MajorityPositionProgram(dspy.Module):
    """Answers with the option at the user's most chosen position; makes no LM call.

    Args:
        train: The user's training answers (examples with `options` and `answer`).
    """

    def __init__(self, train: Sequence[dspy.Example]) -> None:
        super().__init__()
        self.counts = position_counts(train)

    def forward(self, question: str, options: Sequence[str]) -> dspy.Prediction:
        return dspy.Prediction(answer=options[favourite_position(self.counts, len(options))])


def whole_star(rating: float, low: int = 1, high: int = 5) -> int:
    """The nearest whole star within [low, high]; halves round up (3.5 -> 4), unlike Python's round()."""
    return min(high, max(low, math.floor(rating + 0.5)))


class MeanRatingProgram(dspy.Module):
    """Rates every movie with the user's mean training rating, rounded to the nearest whole star (the rating
    student's scale, 1-5); makes no LM call. `mean` keeps the unrounded mean.

    Args:
        train: The user's training ratings (examples with a float `rating`).
    """

    def __init__(self, train: Sequence[dspy.Example]) -> None:
        super().__init__()
        if not train:
            raise ValueError("the mean-rating floor needs at least one training rating.")
        self.mean = fmean(float(example.rating) for example in train)

    def forward(self, title: str, year: int | None, genres: Sequence[str]) -> dspy.Prediction:
        return dspy.Prediction(rating=float(whole_star(self.mean)))


def tag_counts(train: Sequence[dspy.Example]) -> Counter:
    """How often the user gave each tag in their training examples."""
    return Counter(example.tag for example in train)


class MostFrequentTagProgram(dspy.Module):
    """Tags every movie with the user's most frequent training tag (ties: the tag listed first among the options);
    makes no LM call.

    Args:
        train: The user's training examples (with `tag`).
    """

    def __init__(self, train: Sequence[dspy.Example]) -> None:
        super().__init__()
        self.counts = tag_counts(train)

    def forward(self, title: str, year: int | None, genres: Sequence[str], options: Sequence[str]) -> dspy.Prediction:
        ranked = sorted(range(len(options)), key=lambda i: (-self.counts.get(options[i], 0), i))
        return dspy.Prediction(tag=options[ranked[0]])
