"""When a compile stops early: small stop rules behind one Protocol (after gepa's `utils/stop_condition.py`).

After every iteration, Fermi asks each rule in turn; the first that returns a reason ends the compile, and the
reason becomes `FermiResult.stop_reason`. The built-in rules cover a perfect memory, patience and the LM-call
budget; `Fermi(stop_rules=[...])` adds a user's own.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fermi_dspy.memory import PromptMemory


@dataclass(frozen=True)
class IterationState:
    """What a stop rule sees after an iteration.

    Attributes:
        iteration: The iteration just finished (0-based).
        num_iterations: Iterations planned.
        memory: The memory after merging this iteration's candidates.
        previous_best: The best mean score before this iteration (None at the start).
        misaligned_threshold: Scores below it are mis-aligned (tau).
        budget_fits: Whether `calls` more LM calls fit in the compile's budget.
        calls_per_candidate: Task-LM calls one more candidate costs.
    """

    iteration: int
    num_iterations: int
    memory: PromptMemory
    previous_best: float | None
    misaligned_threshold: float
    budget_fits: Callable[[int], bool]
    calls_per_candidate: int


@runtime_checkable
class StopRule(Protocol):
    """Decides after each iteration whether the compile should stop; returns the reason, or None to go on."""

    def __call__(self, state: IterationState) -> str | None: ...


class PerfectMemory:
    """Stop when the best prompt has no mis-aligned example: nothing is left to learn from."""

    def __call__(self, state: IterationState) -> str | None:
        best = state.memory.best
        return "perfect" if best is not None and not best.misaligned(state.misaligned_threshold) else None


class Patience:
    """Stop after `patience` iterations in a row without a better best prompt.

    Args:
        patience: Iterations without improvement to allow.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self._stale = 0

    def __call__(self, state: IterationState) -> str | None:
        best = state.memory.best
        improved = best is not None and (state.previous_best is None or best.mean_score > state.previous_best)
        self._stale = 0 if improved else self._stale + 1
        return "patience" if self._stale >= self.patience else None


class BudgetLeft:
    """Stop when the LM-call budget cannot pay for one more proposal and its scoring."""

    def __call__(self, state: IterationState) -> str | None:
        more = state.iteration + 1 < state.num_iterations
        return "budget" if more and not state.budget_fits(state.calls_per_candidate + 1) else None
