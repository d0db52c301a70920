"""Budgets that make DSPy's optimizers comparable to Fermi: derived from Fermi's T, K and the user's trainset size.

Parity means: every optimizer scores about T*K candidate prompts, each on about as many of the user's answers as
Fermi scores a candidate on, and asks its proposer for about T*K - 1 new prompts. Whatever its own mechanics add on
top (MIPROv2's bootstrapped demo sets for its proposer, GEPA's minibatch checks) is counted and reported, not hidden.
"""

from dataclasses import asdict, dataclass
from typing import Any

from fermi_dspy import Fermi
from fermi_dspy.optimizer import CallPlan
from programs.benchmark.settings import BenchmarkSettings
from programs.tasks import task_for

FERMI_BUDGET = ("candidates", "optimization_examples", "task_calls", "proposer_calls")
"""What the report states of Fermi's cost model: prompts scored (T*K), answers each is scored on, task-LM calls
(their product) and proposals requested (T*K - 1)."""


def fermi_budget(settings: BenchmarkSettings) -> CallPlan:
    """Fermi's nominal cost per user (no early stop): its own cost model (`Fermi.call_plan`) with the run's T and K
    and Fermi's default split."""
    return Fermi(num_iterations=settings.num_iterations, num_candidates=settings.num_candidates).call_plan(
        settings.n_train)


@dataclass(frozen=True)
class CoproConfig:
    """COPRO: breadth B = K (at least 2, COPRO's minimum) and depth D = T give B*D candidates and B*D - 1 proposals
    (B-1 first, then B per later depth), each candidate scored on the whole trainset (COPRO has no demo split)."""

    breadth: int
    depth: int
    init_temperature: float = 1.4


@dataclass(frozen=True)
class MiproConfig:
    """MIPROv2, instruction-only: `auto=None`, zero demos in the program, N = T*K instruction candidates (the first is
    the starting instruction, as MIPROv2 always does) and T*K - 1 trials of full evaluation (`minibatch=False`: the
    valset is MIPROv2's own 80% of the trainset, smaller than any minibatch), plus its evaluation of the starting
    program: T*K evaluations in all. MIPROv2 proposes one instruction per bootstrapped demo set, so it bootstraps N - 1
    sets of the user's answers for its proposer; those task-LM calls are on top and reported. Its proposer is not
    program-aware (`program_aware_proposer=False`): the program is one Predict, and describing it would cost two more
    proposer calls per instruction (3x Fermi's proposer calls) while telling the proposer nothing the instruction
    does not."""

    num_candidates: int
    num_trials: int
    max_bootstrapped_demos: int = 0
    max_labeled_demos: int = 0
    minibatch: bool = False
    program_aware_proposer: bool = False
    init_temperature: float = 1.0


@dataclass(frozen=True)
class GepaConfig:
    """GEPA: `max_metric_calls` = Fermi's task-LM calls (T*K*optimization examples); valset = trainset (GEPA's
    default with no valset), reflection minibatch 3, Pareto candidate selection and merging as GEPA's defaults;
    the metric states the user's answer (the task's feedback metric, `TaskSpec.feedback_metric`)."""

    max_metric_calls: int
    reflection_minibatch_size: int = 3


def copro_config(settings: BenchmarkSettings) -> CoproConfig:
    return CoproConfig(breadth=max(2, settings.num_candidates), depth=settings.num_iterations)


def mipro_config(settings: BenchmarkSettings) -> MiproConfig:
    candidates = settings.num_iterations * settings.num_candidates
    return MiproConfig(num_candidates=max(2, candidates), num_trials=max(1, candidates - 1))


def gepa_config(settings: BenchmarkSettings) -> GepaConfig:
    return GepaConfig(max_metric_calls=fermi_budget(settings).task_calls)


def _why(config: type) -> str:
    return " ".join((config.__doc__ or "").split()).rstrip(".")


def describe_budgets(settings: BenchmarkSettings) -> dict[str, Any]:
    """Every optimizer's configuration for this run, with the reason, for the report."""
    fermi = fermi_budget(settings)
    return {
        "fermi": {**{k: getattr(fermi, k) for k in FERMI_BUDGET}, "T": settings.num_iterations,
                  "K": settings.num_candidates, "L": settings.memory_size,
                  "why": "the run's T, K, L; 80% of the trainset scored, 20% shown"},
        "copro": {**asdict(copro_config(settings)), "why": _why(CoproConfig)},
        "mipro": {**asdict(mipro_config(settings)), "why": _why(MiproConfig)},
        "gepa": {**asdict(gepa_config(settings)), "why": _why(GepaConfig).replace(
            "the task's feedback metric, `TaskSpec.feedback_metric`",
            f"`{task_for(settings.dataset).feedback_metric.__name__}`")},
    }
