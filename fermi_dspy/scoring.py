"""Score candidate prompts on a user's examples with the task LM, in parallel."""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dspy

from fermi_dspy.accounting import BudgetExhaustedError
from fermi_dspy.memory import ScoredPrompt
from fermi_dspy.metrics import Metric, label_fields, normalize_metric_output
from fermi_dspy.parallel import parallel_map
from fermi_dspy.variants import build_variant

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExampleOutcome:
    """One prompt on one example: the metric's score, the model's answer and the metric's feedback.

    `unscored` marks an example skipped because the LM-call budget was spent (neither right nor wrong).
    """

    score: float
    output: str
    feedback: str | None = None
    error: str | None = None
    unscored: bool = False


def render_output(example: dspy.Example, prediction: Any) -> str:
    """The model's answer for the example's label fields, as short text."""
    fields = label_fields(example)
    values = {name: getattr(prediction, name, None) for name in fields}
    if len(values) == 1:
        value = next(iter(values.values()))
        return "" if value is None else str(value)
    return "; ".join(f"{name}: {value}" for name, value in values.items())


class PromptScorer:
    """Runs the student with each candidate prompt on each example and scores it with the metric.

    LM failures (after the LM client's own retries) are scored `failure_score` and recorded as errors: a failed
    call is never counted as a correct answer.
    """

    def __init__(
        self,
        *,
        student: dspy.Module,
        base_instructions: Mapping[str, str],
        metric: Metric,
        lm: dspy.BaseLM,
        num_threads: int = 1,
        failure_score: float = 0.0,
    ) -> None:
        self.student = student
        self.base_instructions = dict(base_instructions)
        self.metric = metric
        self.lm = lm
        self.num_threads = num_threads
        self.failure_score = failure_score

    def run_one(self, program: dspy.Module, example: dspy.Example) -> ExampleOutcome:
        """Run one program on one example and score it."""
        try:
            with dspy.context(lm=self.lm):
                prediction = program(**example.inputs())
        except BudgetExhaustedError as exc:
            return ExampleOutcome(self.failure_score, "", None, str(exc), unscored=True)
        except Exception as exc:
            logger.warning("LM call failed on an example; scored %s: %s: %s", self.failure_score,
                           type(exc).__name__, exc)
            message = f"{type(exc).__name__}: {exc}"
            return ExampleOutcome(self.failure_score, f"[error] {message}"[:300], None, message)
        try:
            raw = self.metric(example, prediction)
        except Exception as exc:
            logger.warning("The metric raised on an example; scored %s: %s: %s", self.failure_score,
                           type(exc).__name__, exc)
            message = f"metric raised {type(exc).__name__}: {exc}"
            return ExampleOutcome(self.failure_score, render_output(example, prediction), None, message)
        result = normalize_metric_output(raw)
        return ExampleOutcome(result.score, render_output(example, prediction), result.feedback)

    def outcomes(
        self,
        prompts: Sequence[str],
        examples: Sequence[dspy.Example],
        *,
        on_result: Callable[[int, ExampleOutcome], None] | None = None,
    ) -> list[list[ExampleOutcome]]:
        """Score every prompt on every example.

        Work is ordered prompt by prompt so that consecutive calls share the prompt's prefix (local engines reuse
        it from their cache).

        Returns:
            outcomes[p][e] for prompt p on example e.
        """
        programs = [build_variant(self.student, prompt, self.base_instructions) for prompt in prompts]
        work = [(p, e) for p in range(len(prompts)) for e in range(len(examples))]
        flat = parallel_map(
            lambda item: self.run_one(programs[item[0]], examples[item[1]]),
            work,
            num_threads=self.num_threads,
            on_result=on_result,
        )
        return [flat[p * len(examples) : (p + 1) * len(examples)] for p in range(len(prompts))]

    def score(
        self,
        prompts: Sequence[str],
        examples: Sequence[dspy.Example],
        *,
        iteration: int,
        first_index: int,
        on_result: Callable[[int, ExampleOutcome], None] | None = None,
        one_at_a_time: bool = False,
    ) -> list[ScoredPrompt]:
        """Score prompts on the optimization examples and return them as `ScoredPrompt`s.

        A prompt left incomplete because the LM-call budget ran out is dropped (it has no comparable score).
        With `one_at_a_time` (used under a budget), prompts are scored one after another (each on all examples in
        parallel), so at most the last one is left incomplete and the outcome does not depend on thread timing.
        """
        if one_at_a_time:
            table = []
            for prompt in prompts:
                row = self.outcomes([prompt], examples, on_result=on_result)[0]
                table.append(row)
                if any(o.unscored for o in row):
                    break
            prompts = prompts[: len(table)]
        else:
            table = self.outcomes(prompts, examples, on_result=on_result)
        complete = [(prompt, row) for prompt, row in zip(prompts, table, strict=True)
                    if not any(o.unscored for o in row)]
        return [
            ScoredPrompt(
                prompt=prompt,
                scores=tuple(o.score for o in row),
                outputs=tuple(o.output for o in row),
                feedback=tuple(o.feedback for o in row),
                iteration=iteration,
                index=first_index + offset,
            )
            for offset, (prompt, row) in enumerate(complete)
        ]
