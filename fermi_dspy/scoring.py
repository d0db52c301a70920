"""Score candidate prompts on a user's examples with the task LM, in parallel.

One personalizable copy of the student answers with every candidate: the prompt is chosen per call
(`fermi_dspy.personalize`), so no per-prompt copies are built, and calls are ordered prompt by prompt so that
consecutive calls share the prompt's prefix (local engines reuse it from their KV cache).
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dspy

from fermi_dspy.accounting import BudgetExhaustedError
from fermi_dspy.memory import ScoredPrompt
from fermi_dspy.metrics import Metric, call_metric, label_fields, metric_arity, normalize_metric_output
from fermi_dspy.parallel import parallel_map
from fermi_dspy.personalize import personalizable_copy, personalized

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExampleOutcome:
    """One prompt on one example: the metric's score, the model's answer and the metric's feedback.

    `unscored` marks an example skipped because the LM-call budget was spent (neither right nor wrong). `error`
    says why an example failed; `metric_failed` tells a metric that raised from an LM call that failed.
    """

    score: float
    output: str
    feedback: str | None = None
    error: str | None = None
    unscored: bool = False
    aligned: bool | None = None
    metric_failed: bool = False


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
    call is never counted as a correct answer. The metric is called the way it takes arguments (2, 3 or GEPA's 5).
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
        self.program = personalizable_copy(student)
        predictors = dict(self.program.named_predictors())
        self.targets = [predictors[name] for name in base_instructions]
        self.metric = metric
        self.arity = metric_arity(metric)
        self.lm = lm
        self.num_threads = num_threads
        self.failure_score = failure_score

    def run_one(self, prompt: str, example: dspy.Example) -> ExampleOutcome:
        """Run the student with one prompt on one example and score it."""
        try:
            with dspy.context(lm=self.lm), personalized(dict.fromkeys(self.targets, prompt)):
                prediction = self.program(**example.inputs())
        except BudgetExhaustedError as exc:
            return ExampleOutcome(self.failure_score, "", None, str(exc), unscored=True)
        except Exception as exc:
            logger.warning("LM call failed on an example; scored %s: %s: %s", self.failure_score,
                           type(exc).__name__, exc)
            message = f"{type(exc).__name__}: {exc}"
            return ExampleOutcome(self.failure_score, f"[error] {message}"[:300], None, message)
        try:
            result = normalize_metric_output(call_metric(self.metric, example, prediction, self.arity))
        except Exception as exc:
            logger.warning("The metric raised on an example; scored %s: %s: %s", self.failure_score,
                           type(exc).__name__, exc)
            message = f"metric raised {type(exc).__name__}: {exc}"
            return ExampleOutcome(self.failure_score, render_output(example, prediction), None, message,
                                  metric_failed=True)
        return ExampleOutcome(result.score, render_output(example, prediction), result.feedback,
                              aligned=result.aligned)

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
        work = [(p, e) for p in range(len(prompts)) for e in range(len(examples))]
        flat = parallel_map(
            lambda item: self.run_one(prompts[item[0]], examples[item[1]]),
            work,
            num_threads=self.num_threads,
            on_result=on_result,
        )
        return [flat[p * len(examples) : (p + 1) * len(examples)] for p in range(len(prompts))]

    def _check_first_round(self, table: list[list[ExampleOutcome]]) -> None:
        """Fail clearly when nothing in the first round was scored: the metric or the LM raised on every example.

        Raises:
            ValueError: The metric raised on every example.
            RuntimeError: Every task-LM call failed.
        """
        ran = [o for row in table for o in row if not o.unscored]
        if not ran:
            return
        name = getattr(self.metric, "__name__", type(self.metric).__name__)
        judged = [o for o in ran if o.error is None or o.metric_failed]  # the examples the metric was called on
        if judged and all(o.metric_failed for o in judged):
            raise ValueError(
                f"The metric {name!r} raised on every example of the first scoring round ({len(judged)} of them), "
                f"e.g. {judged[0].error}. Fix the metric; it is called as metric(example, prediction) (with "
                "trace=None, and GEPA's pred_name=None, pred_trace=None when it requires them)."
            )
        if all(o.error is not None and not o.metric_failed for o in ran):
            raise RuntimeError(
                f"Every task-LM call of the first scoring round failed ({len(ran)} of them), e.g. {ran[0].error}. "
                "Check the task LM (model name, server, key) and that its replies parse."
            )

    def score(
        self,
        prompts: Sequence[str],
        examples: Sequence[dspy.Example],
        *,
        iteration: int,
        first_index: int,
        on_result: Callable[[int, ExampleOutcome], None] | None = None,
        one_at_a_time: bool = False,
        first_round: bool = False,
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
        if first_round:
            self._check_first_round(table)
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
                aligned=tuple(o.aligned for o in row),
            )
            for offset, (prompt, row) in enumerate(complete)
        ]
