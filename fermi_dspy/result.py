"""What a Fermi compile learned and spent, attached to the returned program as `detailed_results`."""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fermi_dspy.accounting import LMUsage
from fermi_dspy.memory import ScoredPrompt

STOP_REASONS = ("completed", "perfect", "patience", "budget")


@dataclass(frozen=True)
class IterationRecord:
    """One iteration: the candidates scored in it and the memory after it.

    Attributes:
        iteration: 0 is the initialization (profile prompt + profile-conditioned proposals).
        candidates: The prompts scored in this iteration.
        memory_scores: Mean scores of the memory's prompts after merging, best first.
        proposals_skipped: Proposals rejected in this iteration, for any reason.
        proposals_rejected: Rejected proposals by reason (see `fermi_dspy.hygiene.REJECTION_REASONS`, and "failed"
            for a proposer call that produced nothing parseable).
        proposals_salvaged: Proposals that went on to copy the meta-prompt's structure and were kept cut to the
            instruction written before the copy.
    """

    iteration: int
    candidates: tuple[ScoredPrompt, ...]
    memory_scores: tuple[float, ...]
    proposals_skipped: int = 0
    proposals_rejected: Mapping[str, int] = field(default_factory=dict)
    proposals_salvaged: int = 0

    @property
    def best_score(self) -> float:
        return self.memory_scores[0] if self.memory_scores else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "candidates": [c.to_dict() for c in self.candidates],
            "memory_scores": list(self.memory_scores),
            "best_score": self.best_score,
            "proposals_skipped": self.proposals_skipped,
            "proposals_rejected": dict(self.proposals_rejected),
            "proposals_salvaged": self.proposals_salvaged,
        }


@dataclass(frozen=True)
class FermiResult:
    """The outcome of one user's compile.

    Attributes:
        memory: The kept prompts, best first, with per-example scores and the model's answers.
        iterations: One record per iteration run.
        stop_reason: "completed" (all iterations), "perfect" (best prompt has no mis-aligned examples), "patience"
            (no improvement for `patience` iterations) or "budget" (`max_lm_calls` reached).
        num_optimization_examples: Examples prompts were scored on.
        num_demonstration_examples: Examples shown to the proposer.
        task_usage: Task-LM calls and tokens.
        proposer_usage: Proposer-LM calls and tokens.
        seconds: Wall time of the compile.
        updated_from: For an incremental compile (`init=`), how many prompts the previous program brought; else
            None.
        rescored_calls: Task-LM calls spent re-scoring the previous program's prompts on the new answers.
    """

    memory: tuple[ScoredPrompt, ...]
    iterations: tuple[IterationRecord, ...]
    stop_reason: str
    num_optimization_examples: int
    num_demonstration_examples: int
    task_usage: LMUsage = field(default_factory=LMUsage)
    proposer_usage: LMUsage = field(default_factory=LMUsage)
    seconds: float = 0.0
    updated_from: int | None = None
    rescored_calls: int = 0

    @property
    def best_score(self) -> float:
        return self.memory[0].mean_score if self.memory else 0.0

    @property
    def num_candidates_scored(self) -> int:
        return sum(len(record.candidates) for record in self.iterations)

    @property
    def proposals_rejected(self) -> dict[str, int]:
        """Rejected proposals over the whole compile, by reason."""
        total: Counter[str] = Counter()
        for record in self.iterations:
            total.update(record.proposals_rejected)
        return dict(total)

    @property
    def proposals_salvaged(self) -> int:
        """Proposals kept cut to the instruction written before a copy of the meta-prompt's structure."""
        return sum(record.proposals_salvaged for record in self.iterations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_score": self.best_score,
            "stop_reason": self.stop_reason,
            "num_optimization_examples": self.num_optimization_examples,
            "num_demonstration_examples": self.num_demonstration_examples,
            "num_candidates_scored": self.num_candidates_scored,
            "proposals_rejected": self.proposals_rejected,
            "proposals_salvaged": self.proposals_salvaged,
            "memory": [p.to_dict() for p in self.memory],
            "iterations": [r.to_dict() for r in self.iterations],
            "task_usage": self.task_usage.to_dict(),
            "proposer_usage": self.proposer_usage.to_dict(),
            "seconds": self.seconds,
            "updated_from": self.updated_from,
            "rescored_calls": self.rescored_calls,
        }
