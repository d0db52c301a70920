"""Scored prompts and the top-L memory that keeps them with their mis-aligned examples."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ScoredPrompt:
    """A candidate prompt scored on each of the user's optimization examples.

    Attributes:
        prompt: The personalization prompt text.
        scores: The metric's score on each optimization example, in order.
        outputs: The model's answer on each example (rendered as text; an error is "[error] ...").
        feedback: The metric's feedback on each example, or None where it gave none.
        iteration: The iteration that proposed it (0 = initialization).
        index: Its creation order over the whole compile (ties in score go to the older prompt).
        aligned: The metric's verdict per example (`aligned=` in its output), or None where it gave none; where
            given, it decides mis-alignment instead of the score threshold.
    """

    prompt: str
    scores: tuple[float, ...]
    outputs: tuple[str, ...]
    feedback: tuple[str | None, ...]
    iteration: int
    index: int
    aligned: tuple[bool | None, ...] = ()
    mean_score: float = field(init=False)

    def __post_init__(self) -> None:
        mean = sum(self.scores) / len(self.scores) if self.scores else 0.0
        object.__setattr__(self, "mean_score", mean)

    def misaligned(self, threshold: float) -> tuple[int, ...]:
        """Indices of the examples this prompt got wrong: the metric said not aligned, or (where it said nothing)
        the score is below `threshold`."""
        verdicts = self.aligned or (None,) * len(self.scores)
        return tuple(i for i, (score, aligned) in enumerate(zip(self.scores, verdicts, strict=True))
                     if (not aligned if aligned is not None else score < threshold))

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "mean_score": self.mean_score,
            "scores": list(self.scores),
            "outputs": list(self.outputs),
            "feedback": list(self.feedback),
            "iteration": self.iteration,
            "index": self.index,
            "aligned": list(self.aligned),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScoredPrompt":
        return cls(
            prompt=data["prompt"],
            scores=tuple(float(s) for s in data["scores"]),
            outputs=tuple(data["outputs"]),
            feedback=tuple(data["feedback"]),
            iteration=int(data["iteration"]),
            index=int(data["index"]),
            aligned=tuple(data.get("aligned") or ()),
        )


def rank_key(prompt: ScoredPrompt) -> tuple[float, int]:
    """Sort key, best first: higher mean score, then older."""
    return (-prompt.mean_score, prompt.index)


class PromptMemory:
    """The best `size` prompts seen so far (Fermi's memory of (prompt, score, mis-aligned set) triplets)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"memory size must be at least 1, got {size}.")
        self.size = size
        self._prompts: list[ScoredPrompt] = []

    def merge(self, candidates: Iterable[ScoredPrompt]) -> list[ScoredPrompt]:
        """Merge new scored prompts and keep the top `size`.

        Returns:
            The new candidates that made it into the memory.
        """
        candidates = list(candidates)
        self._prompts = sorted([*self._prompts, *candidates], key=rank_key)[: self.size]
        kept = {id(p) for p in self._prompts}
        return [c for c in candidates if id(c) in kept]

    @property
    def best(self) -> ScoredPrompt | None:
        return self._prompts[0] if self._prompts else None

    def ranked(self) -> list[ScoredPrompt]:
        """The kept prompts, best first."""
        return list(self._prompts)

    def ascending(self) -> list[ScoredPrompt]:
        """The kept prompts in ascending order of score (worst first), as the proposer sees them."""
        return list(reversed(self._prompts))

    def __len__(self) -> int:
        return len(self._prompts)
