"""Score a per-user program on that user's held-out answers, counting the LM calls it makes."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import dspy

from fermi_dspy.accounting import LMUsage, UsageMeter
from fermi_dspy.metrics import Metric, answer_accuracy, call_metric, normalize_metric_output
from fermi_dspy.parallel import parallel_map
from fermi_dspy.scoring import render_output

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldOutScore:
    """A program's scores on one user's test answers.

    Attributes:
        scores: The metric per test example (an LM failure scores 0).
        answers: The model's answer per test example, its label field as text ("" after a failure).
        failures: Examples whose LM call failed.
        usage: LM calls and tokens spent answering.
    """

    scores: tuple[float, ...]
    answers: tuple[str, ...]
    failures: int = 0
    usage: LMUsage = field(default_factory=LMUsage)

    @property
    def accuracy(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


def evaluate_on_test(
    program: dspy.Module,
    test: Sequence[dspy.Example],
    *,
    lm: dspy.BaseLM,
    metric: Metric = answer_accuracy,
    num_threads: int = 1,
) -> HeldOutScore:
    """Run `program` on every test example with `lm` and score it; failures count as wrong, never as right."""
    meter = UsageMeter()
    run_lm = meter.track(lm.copy())

    def one(example: dspy.Example) -> tuple[float, str, bool]:
        try:
            with dspy.context(lm=run_lm):
                prediction = program(**example.inputs())
        except Exception as exc:
            logger.warning("Test example failed (scored 0): %s: %s", type(exc).__name__, exc)
            return 0.0, "", True
        score = normalize_metric_output(call_metric(metric, example, prediction)).score
        return score, render_output(example, prediction), False

    with dspy.context(callbacks=[*dspy.settings.callbacks, meter]):
        rows = parallel_map(one, list(test), num_threads=num_threads)
    return HeldOutScore(
        scores=tuple(r[0] for r in rows),
        answers=tuple(r[1] for r in rows),
        failures=sum(r[2] for r in rows),
        usage=meter.usage(),
    )
