"""The extension points of fermi-dspy, as Protocols: what a replacement must look like. All are plain callables, so a
function with the right parameters is one.

* `Metric`: scores a prediction against the user's answer (`Fermi(metric=...)`).
* `Embedder`: embeds texts for Retrieval-of-Prompt (`Fermi(embedder=...)`, `PersonalizedProgram(embedder=...)`).
* `PromptSelector`: picks the kept prompt that answers a query (`fermi_dspy.selection.choose_prompt` is the paper's).
* `StopRule`: ends a compile early (`Fermi(stop_rules=[...])`; see `fermi_dspy.stopping`).
* `LMHook`: runs around every LM call of a wrapped LM (budgets, meters, guards; see `fermi_dspy.accounting`).

Others are classes to subclass: `fermi_dspy.runs.UserJob` (per-user work of a run), and the `fermi-dspy` command's
plugins follow `fermi_dspy.cli.Command`.
"""

from typing import Any, Protocol, runtime_checkable

import dspy
import numpy as np

from fermi_dspy.accounting import LMHook
from fermi_dspy.stopping import StopRule


@runtime_checkable
class Metric(Protocol):
    """A DSPy metric: how well `prediction` matches the user's answer in `example`.

    Fermi calls it the ways DSPy does: `(example, prediction)`, `(example, prediction, trace)` or, for GEPA-style
    metrics, `(gold, pred, trace, pred_name, pred_trace)`, by the number of parameters without a default. It returns
    a float in [0, 1], a bool, or `dspy.Prediction(score=..., feedback=...)`, whose feedback the proposer is shown.
    """

    def __call__(self, example: dspy.Example, prediction: dspy.Prediction,
                 trace: Any = None) -> float | bool | dspy.Prediction: ...


@runtime_checkable
class Embedder(Protocol):
    """Embeds texts: `texts` -> an array of shape (len(texts), d). A `dspy.Embedder` is one."""

    def __call__(self, texts: list[str]) -> Any: ...


@runtime_checkable
class PromptSelector(Protocol):
    """Chooses, for one query, which of the kept prompts answers it.

    Args:
        scores: (prompts, past questions) scores of each kept prompt on the user's past questions.
        mean_scores: Each prompt's mean score.
        similarities: The query's similarity to each past question, or None when selecting without retrieval.
        num_retrieved: How many of the most similar past questions decide.

    Returns:
        The index of the chosen prompt.
    """

    def __call__(self, scores: np.ndarray, mean_scores: np.ndarray, similarities: np.ndarray | None,
                 num_retrieved: int) -> int: ...


__all__ = ["Embedder", "LMHook", "Metric", "PromptSelector", "StopRule"]
