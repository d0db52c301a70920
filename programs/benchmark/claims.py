"""The questions the benchmark answers, each as a paired difference over users with its 95% CI and a verdict.

* Does Fermi beat the best baseline (the paper: +6.8 points on OpinionQA, +4.1 on GlobalOpinionQA)?
* (a) Does showing the proposer the mis-aligned responses beat a scores-only memory (Fermi vs OPRO)?
* (b) Does Retrieval-of-Prompt beat the single best prompt?
* Does the profile help Fermi?
* Which methods beat the LM-free floor?
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from programs.benchmark.methods import METHODS, MethodResult
from programs.stats import MeanCI, paired_difference

BASELINES = ("floor", "zero_shot", "profile_prompt", "fewshot", "opro", "copro", "mipro", "gepa")
"""What Fermi is compared with as "the best baseline" (its own ablations are not baselines)."""


@dataclass(frozen=True)
class Claim:
    """One comparison: `better` minus `worse` over the users both ran on."""

    question: str
    better: str
    worse: str
    difference: MeanCI
    kind: str = "fermi"

    @property
    def verdict(self) -> str:
        if self.difference.n < 2:
            return "too few users to tell"
        if self.difference.low > 0:
            return "yes (the 95% CI is above 0)"
        if self.difference.high < 0:
            return "no, the reverse (the 95% CI is below 0)"
        return "not distinguishable (the 95% CI includes 0)"

    def line(self, labels: Mapping[str, str] | None = None) -> str:
        """The claim as a Markdown list item (methods named by `labels`, default `METHODS`' labels)."""
        d = self.difference
        name = {**{m: spec.label for m, spec in METHODS.items()}, **(labels or {})}
        return (f"- {self.question} {name[self.better]} − {name[self.worse]}: "
                f"{d.mean * 100:+.1f} points [{d.low * 100:+.1f}, {d.high * 100:+.1f}] over {d.n} users → "
                f"{self.verdict}.")


def _accuracies(results: Sequence[MethodResult]) -> dict[str, dict[str, float]]:
    by_method: dict[str, dict[str, float]] = {}
    for result in results:
        if result.ok:
            by_method.setdefault(result.method, {})[result.user_id] = result.accuracy
    return by_method


def claims(results: Sequence[MethodResult], *, seed: int = 0, measure: str = "accuracy") -> list[Claim]:
    """The comparisons that the methods present in `results` allow (`measure`: what their score is called)."""
    accuracy = _accuracies(results)

    def claim(question: str, better: str, worse: str, kind: str = "fermi") -> Claim | None:
        if better not in accuracy or worse not in accuracy:
            return None
        difference = paired_difference(accuracy[better], accuracy[worse], seed=seed)
        return Claim(question, better, worse, difference, kind)

    found = []
    baselines = [m for m in BASELINES if m in accuracy]
    if "fermi" in accuracy and baselines:
        best = max(baselines, key=lambda m: sum(accuracy[m].values()) / len(accuracy[m]))
        found.append(claim(f"Does Fermi beat the best baseline (by mean {measure} here)?", "fermi", best))
    found.append(claim("(a) Do mis-aligned responses beat a scores-only memory?", "fermi", "opro"))
    found.append(claim("(b) Does Retrieval-of-Prompt beat the single best prompt?", "fermi", "fermi_best"))
    found.append(claim("Does the profile help Fermi?", "fermi", "fermi_no_profile"))
    for method in METHODS:
        if method != "floor":
            found.append(claim("Does it beat the LM-free floor?", method, "floor", kind="floor"))
    return [c for c in found if c is not None]
