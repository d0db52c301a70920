"""What a benchmark run compares: data set, users, split, Fermi's T/K/L (every budget derives from them), LMs."""

from dataclasses import asdict, dataclass
from typing import Any

from fermi_dspy.runs import LMConfig
from programs.tasks import OPINION, RATING, TAGGING, task_for

METHOD_ORDER = (
    "floor",
    "zero_shot",
    "profile_prompt",
    "fewshot",
    "opro",
    "copro",
    "mipro",
    "gepa",
    "fermi",
    "fermi_best",
    "fermi_soft",
    "fermi_no_profile",
)
"""Every method, in report order (see `programs.benchmark.methods` for what each is)."""

DEFAULT_METHODS = ("floor", "zero_shot", "profile_prompt", "fewshot", "opro", "gepa", "fermi", "fermi_best",
                   "fermi_soft")
"""What a run compares unless told otherwise: the LM-free floor, the baselines, OPRO, GEPA and Fermi with its 0/1 and
soft scores (COPRO, MIPROv2 and Fermi without profile stay available with --methods); on a task, those it can run."""

_NO_PROFILE = ("floor", "zero_shot", "fewshot", "opro", "gepa", "fermi", "fermi_best")
TASK_METHODS: dict[str, tuple[str, ...]] = {
    OPINION: METHOD_ORDER,
    RATING: _NO_PROFILE,
    TAGGING: (*_NO_PROFILE, "fermi_soft"),
}
"""The methods each task can run (`programs.tasks`). The MovieLens tasks have no profile, so the profile prompt and
Fermi without profile would be the plain student and Fermi again; COPRO and MIPROv2 are configured for accuracy on
opinion questions and are not run there; the soft score needs option probabilities, which a star rating has not.
OPRO and GEPA start from the plain student; GEPA's feedback is the task's (`rating_score` states the person's
rating)."""


def task_methods(dataset: str) -> tuple[str, ...]:
    """The methods a data set's task can run (`TASK_METHODS`)."""
    return TASK_METHODS[task_for(dataset).name]


def default_methods(dataset: str) -> tuple[str, ...]:
    """`DEFAULT_METHODS` that the data set's task can run."""
    supported = task_methods(dataset)
    return tuple(m for m in DEFAULT_METHODS if m in supported)

#: `task_lm` / `proposer_lm` for instant scripted LMs (`fermi_dspy.testing.instant_lm`): checks the pipeline in seconds.
SCRIPTED = "scripted"
SCRIPTED_SPEC = "factory:fermi_dspy.testing:instant_lm"

#: The default task model: on the persona probe (`programs.bench_persona_probe`, 6 Hwang users x 20 questions) the
#: only embedded model whose answers move with the persona, and toward the person (Qwen-0.5B barely moves).
DEFAULT_TASK_LM = "local:qwen2.5-coder-1.5b"

REFERENCE_METHOD = "fermi"
"""The method every other one is compared with (wins/ties/losses, paired differences)."""

PAPER_SETTINGS = {"num_iterations": 10, "num_candidates": 4, "memory_size": 5}


@dataclass(frozen=True)
class BenchmarkSettings:
    """A benchmark run's settings; stored in the run directory, and a resumed run must match them.

    Attributes:
        dataset: "hwang" (OpinionQA per-user records), "panelists" (OpinionQA ATP panelists), "global"
            (GlobalOpinionQA countries as users), "movielens-rating" or "movielens-tag" (LaMP-3/LaMP-2-like MovieLens
            tasks, no profile; `programs.tasks`). `for_data` gives a task's default split.
        data_path: A data file or folder instead of the default `../shared/data`.
        users: How many users to run.
        user_sample: "random" (a seeded sample of the users with enough answers, spread over topics) or "first"
            (the first ones in file order).
        n_train: Training answers per user (what every method may learn from).
        n_test: Held-out answers per user (what every method is scored on).
        seed: Seeds the user sample, the splits and every optimizer.
        methods: The methods to run (names from `METHOD_ORDER` that the task can run, `TASK_METHODS`); None is
            `default_methods(dataset)`.
        num_iterations: Fermi's T (also OPRO's; COPRO's depth).
        num_candidates: Fermi's K (also OPRO's; COPRO's breadth).
        memory_size: Fermi's L (also OPRO's).
        fewshot_k: Past answers shown per query by the retrieved few-shot baseline (and Fermi's retrieval N~).
        task_lm: Task LM spec ("local", "local:<model>", a .gguf path, a DSPy/LiteLLM model string, a factory: spec,
            or "scripted"); None is `DEFAULT_TASK_LM`.
        proposer_lm: Proposer LM spec (same forms; default: `$FERMI_PROPOSER_LM`, else as the task LM).
        local_model: The embedded model "local" means.
        route: "inprocess" or "server" for local models.
        api_base: An OpenAI-compatible server for remote specs (the API key is never stored).
        task_max_tokens: Completion budget of a task-LM call (an answer is one option: a long reply is a wrong one,
            and a small local model that rambles would otherwise spend seconds per question).
        proposer_max_tokens: Completion budget of a proposer call.
        num_threads: Parallel LM calls (1 suits the in-process local LM, which runs one call at a time).
    """

    dataset: str = "hwang"
    data_path: str | None = None
    users: int = 8
    user_sample: str = "random"
    n_train: int = 10
    n_test: int = 20
    seed: int = 0
    methods: tuple[str, ...] | None = None
    num_iterations: int = 3
    num_candidates: int = 3
    memory_size: int = 5
    fewshot_k: int = 3
    task_lm: str | None = None
    proposer_lm: str | None = None
    local_model: str | None = None
    route: str = "inprocess"
    api_base: str | None = None
    task_max_tokens: int = 96
    proposer_max_tokens: int = 192
    num_threads: int = 1

    def __post_init__(self) -> None:
        supported = task_methods(self.dataset)
        methods = default_methods(self.dataset) if self.methods is None else tuple(self.methods)
        object.__setattr__(self, "methods", methods)
        unknown = [m for m in self.methods if m not in METHOD_ORDER]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHOD_ORDER)}.")
        unsupported = [m for m in self.ordered_methods if m not in supported]
        if unsupported:
            raise ValueError(f"the {task_for(self.dataset).name} task (--data {self.dataset}) cannot run "
                             f"{', '.join(unsupported)}; the methods that work on it are: {', '.join(supported)}.")
        if not self.methods:
            raise ValueError("methods is empty; name at least one method.")
        if self.user_sample not in ("random", "first"):
            raise ValueError(f"user_sample must be 'random' or 'first', got {self.user_sample!r}.")
        for name in ("users", "n_train", "n_test", "num_iterations", "num_candidates", "memory_size", "fewshot_k",
                     "task_max_tokens", "proposer_max_tokens", "num_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")

    @classmethod
    def for_data(cls, dataset: str = "hwang", **overrides: Any) -> "BenchmarkSettings":
        """Settings for a data set with its task's default split (`programs.tasks.TaskSpec.split`) and methods."""
        split = task_for(dataset).split
        sizes = {"n_train": split[0], "n_test": split[1]} if split else {}
        return cls(dataset=dataset, **{**sizes, **overrides})

    @property
    def ordered_methods(self) -> tuple[str, ...]:
        """The chosen methods in report order."""
        return tuple(m for m in METHOD_ORDER if m in self.methods)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["methods"] = list(self.ordered_methods)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchmarkSettings":
        return cls(**{**data, "methods": tuple(data["methods"])})

    def fermi(self) -> dict[str, Any]:
        """Fermi's arguments for the run: T, K, L, retrieval N~ and the task's retrieval fields and metric."""
        spec = task_for(self.dataset)
        fermi = {"num_iterations": self.num_iterations, "num_retrieved": self.fewshot_k,
                 "num_candidates": self.num_candidates, "memory_size": self.memory_size,
                 "retrieval_fields": spec.retrieval_fields}
        return fermi if spec.fermi_metric is None else {**fermi, "metric": spec.fermi_metric}

    def lm_configs(self, **execution: Any) -> tuple[LMConfig, LMConfig]:
        """The task and proposer LMs, uncached so that every method pays for every call.

        Args:
            **execution: How the LMs are reached, which does not change results (api_key_env, num_retries, timeout,
                local_threads).
        """

        def config(spec: str | None, max_tokens: int) -> LMConfig:
            return LMConfig(SCRIPTED_SPEC if spec == SCRIPTED else spec, api_base=self.api_base,
                            local_model=self.local_model, route=self.route, max_tokens=max_tokens, cache=False,
                            **execution)

        return (config(self.task_lm or DEFAULT_TASK_LM, self.task_max_tokens),
                config(self.proposer_lm, self.proposer_max_tokens))
