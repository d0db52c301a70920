"""The LM-free floor: answer every question with the option position this user chose most often in training.

A method that does not beat it has learned nothing a counter could not.
"""

from collections import Counter
from collections.abc import Sequence

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
