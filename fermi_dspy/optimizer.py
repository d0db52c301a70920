"""Fermi: few-shot personalization of LLMs with mis-aligned responses (Kim & Yang, NAACL 2025), as a teleprompter.

`Fermi.compile` reads as its steps: check the input, split the user's answers, then per iteration propose, score,
remember and ask the stop rules; finally build the program. `Fermi.call_plan` is the one model of what a compile
costs, which runs and benchmarks use for their budgets and estimates.
"""

import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import dspy
from dspy.teleprompt.teleprompt import Teleprompter
from tqdm import tqdm

from fermi_dspy import progress
from fermi_dspy.accounting import CallBudget, UsageMeter, with_budget
from fermi_dspy.identity import example_key, profile_key
from fermi_dspy.memory import PromptMemory, ScoredPrompt
from fermi_dspy.metrics import Metric, answer_accuracy, metric_arity, uses_logprobs
from fermi_dspy.profile import Profile, initial_prompt, render_profile, validate_profile
from fermi_dspy.program import PersonalizedProgram
from fermi_dspy.proposal import Proposer, prompt_key, render_demonstrations, render_memory
from fermi_dspy.result import FermiResult, IterationRecord
from fermi_dspy.scoring import PromptScorer
from fermi_dspy.selection import Embedder, PromptRouter, Selection, TfidfEmbedder, check_selection, embed, query_text
from fermi_dspy.signatures import ProposePersonalizedPrompt, ProposePromptFromScores, check_proposer_signature
from fermi_dspy.stopping import BudgetLeft, IterationState, Patience, PerfectMemory, StopRule
from fermi_dspy.validation import MIN_TRAINSET_SIZE, validate_examples
from fermi_dspy.variants import target_instructions

logger = logging.getLogger(__name__)

Feedback = Literal["misaligned", "scores"]
Auto = Literal["light", "paper"]

#: Presets for the search size (`Fermi(auto=...)`): "paper" is the paper's T=10, K=4, L=5; "light" is what a
#: small local model can afford in minutes.
AUTO_SETTINGS: dict[str, dict[str, int]] = {
    "light": {"num_iterations": 3, "num_candidates": 3, "memory_size": 5},
    "paper": {"num_iterations": 10, "num_candidates": 4, "memory_size": 5},
}


def demonstration_count(n: int, demo_fraction: float) -> int:
    """How many of `n` examples are shown to the proposer instead of scored (the rest are optimization examples).

    At least one example is always kept for optimization; with `demo_fraction` > 0 and two or more examples, at
    least one is a demonstration.
    """
    n_demo = round(n * demo_fraction)
    if demo_fraction > 0 and n >= 2:
        n_demo = max(1, n_demo)
    return max(0, min(n_demo, n - 1))


def split_examples(
    examples: Sequence[dspy.Example], demo_fraction: float, rng: random.Random
) -> tuple[list[dspy.Example], list[dspy.Example]]:
    """Split a user's examples into optimization examples (scored) and demonstrations (shown to the proposer).

    Sizes follow `demonstration_count`; both parts keep the trainset's order.
    """
    demo_indices = set(rng.sample(range(len(examples)), demonstration_count(len(examples), demo_fraction)))
    optimization = [e for i, e in enumerate(examples) if i not in demo_indices]
    demonstrations = [e for i, e in enumerate(examples) if i in demo_indices]
    return optimization, demonstrations


def _question_texts(example: dspy.Example) -> list[str]:
    """The free-text inputs of an example (a proposal must not reproduce them)."""
    return [value for value in example.inputs().values() if isinstance(value, str) and len(value) >= 20]


def render_task(base_instructions: dict[str, str]) -> str:
    """The task instructions the prompt is composed with, as the proposer sees them."""
    if len(base_instructions) == 1:
        return next(iter(base_instructions.values()))
    return "\n".join(f"[{name}] {instruction}" for name, instruction in base_instructions.items())


@dataclass(frozen=True)
class CallPlan:
    """What one compile costs at most, before any LM call (no early stop, no adapter retries).

    Attributes:
        optimization_examples: Examples each candidate is scored on.
        demonstration_examples: Examples shown to the proposer.
        candidates: Prompts scored (T*K; the profile prompt is one of iteration 0's K).
        task_calls: Task-LM calls: candidates x optimization examples x personalized predictors.
        proposer_calls: Proposals requested (T*K - 1), re-samples of rejected ones not included.
        first_candidate_calls: Task-LM calls of the first candidate (the fewest a compile can produce a result with).
    """

    optimization_examples: int
    demonstration_examples: int
    candidates: int
    task_calls: int
    proposer_calls: int
    first_candidate_calls: int

    @property
    def calls(self) -> int:
        return self.task_calls + self.proposer_calls


class Fermi(Teleprompter):
    """Fermi learns a few personalized prompts for one user from their profile and a few of their past answers.

    Each iteration scores candidate prompts on the user's optimization examples with the task LM, keeps the best
    `memory_size` prompts with the examples each got wrong (its mis-aligned responses), and asks the proposer LM,
    through `proposer_signature`, for `num_candidates` new prompts given the profile, demonstrations and that memory.
    The returned `PersonalizedProgram` answers each query with the kept prompt that scored best on the user's most
    similar past questions (Retrieval-of-Prompt), or with the single best prompt (`selection="best"`).

    Only the compiled user's data is ever sent to an LM or stored in the program. The learned prompt is placed
    before each personalized predictor's own instruction, so the task instructions are kept. With several
    predictors, all of them (or those named in `predictors`) get the same prompt.

    Args:
        metric: A DSPy metric `(example, prediction[, trace])`, or GEPA's `(gold, pred, trace, pred_name,
            pred_trace)`, returning a float, a bool or `dspy.Prediction(score=, feedback=, aligned=)`; None is
            per-user multiple-choice accuracy (`answer_accuracy`). Feedback is shown to the proposer; `aligned`
            decides mis-alignment for soft scores (see `fermi_dspy.metrics`). `answer_probability` scores with the
            task LM's probability of the user's answer (the task LM is then asked for log-probabilities).

        *Language models*

        prompt_model: The proposer LM. Defaults to the task LM.
        task_model: The LM that answers the user's questions. Defaults to `dspy.settings.lm` at compile time.

        *Search (the paper's T, K, L and tau)*

        auto: A preset for T, K and L (`AUTO_SETTINGS`: "paper" or "light"); None uses the three arguments below.
        num_iterations: Iterations T, the initialization included (paper: 10).
        num_candidates: New prompts K per iteration (paper: 4).
        memory_size: Prompts L kept in memory (paper: 5).
        misaligned_threshold: Scores below it make an example mis-aligned (paper's tau: 1.0 for exact answers).
        demo_fraction: Share of the trainset shown to the proposer as demonstrations instead of scored (paper: 0.2).
        update_iterations: Iterations an incremental compile (`compile(..., init=previous)`) runs after re-scoring
            the previous prompts on the new answers.

        *Proposer*

        feedback: "misaligned" (Fermi) or "scores" (OPRO-style: the proposer sees prompts and scores only).
        proposer_signature: Replaces the proposer's Signature; see `fermi_dspy.signatures`.
        proposer_temperature: Sampling temperature of the proposer (paper: 1.0).
        context_budget_chars: Character budget of the memory and mis-aligned examples shown to the proposer.
        max_prompt_chars: Longest prompt kept; longer proposals are cut.

        *Retrieval-of-Prompt*

        selection: "retrieval" (Retrieval-of-Prompt) or "best".
        num_retrieved: Past questions consulted per query by Retrieval-of-Prompt (paper: 3).
        embedder: A `dspy.Embedder` or callable `list[str] -> array` for retrieval; None fits TF-IDF on the user's
            own questions (offline, saved with the program).
        retrieval_fields: Input fields embedded for retrieval; None embeds all inputs.

        *Student*

        predictors: Names of the student's predictors to personalize; None personalizes all.
        task_temperature: Temperature of the task LM while scoring (paper: 0.0); None keeps the LM's own.
        failure_score: Score of an example whose LM call failed after retries.

        *Stopping and budgets*

        patience: Stop after this many iterations without a better best prompt; None never stops early this way.
        stop_rules: More `fermi_dspy.stopping.StopRule`s, asked after every iteration after the built-in ones.
        max_lm_calls: Hard cap on task plus proposer LM calls for one compile (adapter retries included); None is no
            cap. Steps that would not fit are not started; the compile stops and keeps its best prompts
            (`stop_reason="budget"`).
        max_cost: Cap in USD on the compile's LM calls, where DSPy reports cost (hosted LiteLLM models); checked
            before each call.

        *Execution*

        num_threads: Threads for scoring and proposing; None uses `dspy.settings.num_threads`.
        seed: Seeds the split and the proposer's rollouts; the same seed and a deterministic LM give the same result.
        display_progress: Show a progress bar while compiling.

    Examples:
        ```python
        import dspy
        from fermi_dspy import Fermi
        from fermi_dspy.programs import OpinionQA

        optimizer = Fermi(prompt_model=dspy.LM("openai/gpt-4o"), task_model=dspy.LM("openai/gpt-4o-mini"))
        personal = optimizer.compile(OpinionQA(), trainset=user_examples, profile={"Age": "65+", "Party": "Republican"})
        personal(question="...", options=["Yes", "No"]).answer
        personal.save("user_123.json")
        later = optimizer.compile(OpinionQA(), trainset=user_examples + new_answers, profile=..., init=personal)
        ```
    """

    def __init__(
        self,
        metric: Metric | None = None,
        *,
        prompt_model: dspy.BaseLM | None = None,
        task_model: dspy.BaseLM | None = None,
        auto: Auto | None = None,
        num_iterations: int = 10,
        num_candidates: int = 4,
        memory_size: int = 5,
        misaligned_threshold: float = 1.0,
        demo_fraction: float = 0.2,
        update_iterations: int = 2,
        feedback: Feedback = "misaligned",
        proposer_signature: type[dspy.Signature] | None = None,
        proposer_temperature: float = 1.0,
        context_budget_chars: int = 8000,
        max_prompt_chars: int = 1500,
        selection: Selection = "retrieval",
        num_retrieved: int = 3,
        embedder: Embedder | None = None,
        retrieval_fields: Sequence[str] | None = None,
        predictors: Sequence[str] | None = None,
        task_temperature: float | None = 0.0,
        failure_score: float = 0.0,
        patience: int | None = None,
        stop_rules: Sequence[StopRule] = (),
        max_lm_calls: int | None = None,
        max_cost: float | None = None,
        num_threads: int | None = None,
        seed: int = 0,
        display_progress: bool = True,
    ) -> None:
        check_selection(selection)
        if metric is not None:
            metric_arity(metric)  # a metric that cannot be called fails here, not after the first LM calls
        if feedback not in ("misaligned", "scores"):
            raise ValueError(f"feedback={feedback!r}; use 'misaligned' (Fermi) or 'scores' (OPRO-style).")
        if auto is not None and auto not in AUTO_SETTINGS:
            raise ValueError(f"auto={auto!r}; use one of {sorted(AUTO_SETTINGS)} or None (explicit T, K, L).")
        if proposer_signature is not None:
            check_proposer_signature(proposer_signature)
        for name, value, low in (
            ("num_iterations", num_iterations, 1),
            ("num_candidates", num_candidates, 1),
            ("memory_size", memory_size, 1),
            ("num_retrieved", num_retrieved, 1),
            ("update_iterations", update_iterations, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        if not 0.0 <= demo_fraction < 1.0:
            raise ValueError(f"demo_fraction must be in [0, 1), got {demo_fraction!r}.")
        bad_rules = [rule for rule in stop_rules if not callable(rule)]
        if bad_rules:
            raise TypeError(f"stop_rules must be callables `(IterationState) -> str | None`; got {bad_rules!r}.")
        self.metric = metric
        self.prompt_model = prompt_model
        self.task_model = task_model
        self.auto = auto
        self.num_iterations = num_iterations
        self.num_candidates = num_candidates
        self.memory_size = memory_size
        self.misaligned_threshold = misaligned_threshold
        self.demo_fraction = demo_fraction
        self.update_iterations = update_iterations
        self.feedback = feedback
        self.proposer_signature = proposer_signature
        self.proposer_temperature = proposer_temperature
        self.context_budget_chars = context_budget_chars
        self.max_prompt_chars = max_prompt_chars
        self.selection = selection
        self.num_retrieved = num_retrieved
        self.embedder = embedder
        self.retrieval_fields = retrieval_fields
        self.predictors = predictors
        self.task_temperature = task_temperature
        self.failure_score = failure_score
        self.patience = patience
        self.stop_rules = stop_rules
        self.max_lm_calls = max_lm_calls
        self.max_cost = max_cost
        self.num_threads = num_threads
        self.seed = seed
        self.display_progress = display_progress

    # -- settings and the cost model -------------------------------------------------------------------------------

    def search(self) -> dict[str, int]:
        """The search size in effect: `AUTO_SETTINGS[auto]`, or the explicit T, K and L."""
        if self.auto is not None:
            return dict(AUTO_SETTINGS[self.auto])
        return {"num_iterations": self.num_iterations, "num_candidates": self.num_candidates,
                "memory_size": self.memory_size}

    def call_plan(self, num_examples: int, *, predictors: int = 1) -> CallPlan:
        """The most LM calls a fresh compile on `num_examples` training answers makes (like GEPA's `auto_budget`).

        Args:
            num_examples: The user's training answers.
            predictors: Personalized predictors the student calls per example.
        """
        search = self.search()
        demos = demonstration_count(num_examples, self.demo_fraction)
        optimization = num_examples - demos
        candidates = search["num_iterations"] * search["num_candidates"]
        return CallPlan(optimization, demos, candidates, candidates * optimization * predictors,
                        max(0, candidates - 1), optimization * predictors)

    def _resolve_lms(self) -> tuple[dspy.BaseLM, dspy.BaseLM]:
        task_lm = self.task_model or dspy.settings.lm
        if task_lm is None:
            raise ValueError(
                "Fermi needs a task LM: pass Fermi(task_model=dspy.LM(...)) or call dspy.configure(lm=...) first."
            )
        return task_lm, self.prompt_model or task_lm

    # -- compile ------------------------------------------------------------------------------------------------

    def compile(
        self,
        student: dspy.Module,
        *,
        trainset: list[dspy.Example],
        profile: Profile = None,
        valset: list[dspy.Example] | None = None,
        init: PersonalizedProgram | None = None,
    ) -> PersonalizedProgram:
        """Personalize `student` to one user; the student is left unchanged.

        Args:
            student: The DSPy program to personalize.
            trainset: This user's past answers (at least 2), inputs marked with `.with_inputs(...)`.
            profile: This user's profile: a dict of attributes, a text, or None.
            valset: More of this user's answers, optional. The kept prompts are also scored on them, and they join
                the past questions Retrieval-of-Prompt chooses from.
            init: This user's earlier personalized program, to update instead of starting over: its prompts are
                re-scored on the answers of `trainset` it has not seen (only those), then `update_iterations`
                iterations run. `trainset` must hold every answer it was compiled on, and the profile must match.

        Returns:
            A `PersonalizedProgram`; its `detailed_results` (a `FermiResult`, not saved) records the run.

        Raises:
            TypeError, ValueError: Bad input, raised before any LM call (an `init` of another user included).
        """
        # Step 1: check every input before any LM call.
        base_instructions = self._validate(student, trainset, profile, valset, init)
        run = _Compilation(self, student, base_instructions, trainset, profile)
        # Step 2: split the user's answers into optimization examples and demonstrations.
        run.split(init)
        # Step 3: the memory to start from: the previous program's prompts, re-scored on the new answers only.
        if init is not None:
            run.resume_memory(init)
        # Step 4: iterate: propose, score, remember, then ask the stop rules.
        iterations = self.update_iterations if init is not None else self.search()["num_iterations"]
        run.iterate(iterations, start_from_profile=init is None)
        # Step 5: build the personalized program with Retrieval-of-Prompt's routing data.
        return run.build(valset)

    def _validate(self, student: dspy.Module, trainset: list[dspy.Example], profile: Profile,
                  valset: list[dspy.Example] | None, init: PersonalizedProgram | None) -> dict[str, str]:
        if not isinstance(student, dspy.Module):
            raise TypeError(f"student must be a dspy.Module (e.g. dspy.Predict), got {type(student).__name__}.")
        validate_profile(profile)
        base_instructions = target_instructions(student, self.predictors)
        check_answers = self.metric is None
        validate_examples(trainset, name="trainset", student=student, min_size=MIN_TRAINSET_SIZE,
                          check_answers=check_answers)
        if valset is not None:
            validate_examples(valset, name="valset", student=student, check_answers=check_answers)
        if init is not None:
            check_init(init, trainset, profile, base_instructions)
        self._resolve_lms()
        check_proposer_signature(self._proposer_signature())
        return base_instructions

    def _proposer_signature(self) -> type[dspy.Signature]:
        return self.proposer_signature or (
            ProposePersonalizedPrompt if self.feedback == "misaligned" else ProposePromptFromScores
        )

    def _stop_rules(self) -> list[StopRule]:
        rules: list[StopRule] = [PerfectMemory()]
        if self.patience is not None:
            rules.append(Patience(self.patience))
        rules.append(BudgetLeft())
        return [*rules, *self.stop_rules]


def check_init(init: Any, trainset: Sequence[dspy.Example], profile: Profile,
               base_instructions: dict[str, str]) -> None:
    """Refuse an `init` program that is not this user's earlier program (before any LM call).

    Raises:
        TypeError: Not a `PersonalizedProgram`.
        ValueError: It was compiled on answers missing from `trainset`, with another profile, for other predictors,
            or saved without the record an update needs.
    """
    if not isinstance(init, PersonalizedProgram):
        raise TypeError(f"init must be the user's earlier PersonalizedProgram, got {type(init).__name__}.")
    router = init.router
    if not router.example_keys or router.num_optimization is None:
        raise ValueError("init was compiled or saved before programs recorded which answers they learned from, so it "
                         "cannot be updated; compile this user afresh (without init).")
    if router.profile_key != profile_key(profile):
        raise ValueError("init was compiled with another profile: it is not this user's program (or the profile "
                         "changed). Compile afresh for a changed profile.")
    if set(router.base_instructions) != set(base_instructions):
        raise ValueError(f"init personalizes predictors {sorted(router.base_instructions)}, this compile "
                         f"{sorted(base_instructions)}; use the same student and predictors.")
    keys = {example_key(example) for example in trainset}
    learned = router.example_keys[: router.num_optimization] + list(router.demonstration_keys)
    missing = [key for key in learned if key not in keys]
    if missing:
        raise ValueError(f"init was compiled on {len(missing)} answer(s) that are not in this trainset: it is another "
                         "user's program, or answers were removed. Pass every answer it learned from, plus the new "
                         "ones, as trainset.")


@dataclass
class _Compilation:
    """One compile's state and its steps (kept off the optimizer, whose attributes are its settings)."""

    fermi: Fermi
    student: dspy.Module
    base_instructions: dict[str, str]
    trainset: list[dspy.Example]
    profile: Profile
    optimization: list[dspy.Example] = field(default_factory=list)
    demonstrations: list[dspy.Example] = field(default_factory=list)
    memory: PromptMemory | None = None
    records: list[IterationRecord] = field(default_factory=list)
    stop_reason: str = "completed"
    created: int = 0
    rescored: int = 0
    updated_from: int | None = None

    def __post_init__(self) -> None:
        fermi = self.fermi
        self.started = time.perf_counter()
        self.search = fermi.search()
        task_lm, prompt_lm = fermi._resolve_lms()
        self.rng = random.Random(fermi.seed)
        self.task_meter, self.proposer_meter = UsageMeter(), UsageMeter()
        self.budget = CallBudget(fermi.max_lm_calls, fermi.max_cost,
                                 lambda: (self.task_meter.usage() + self.proposer_meter.usage()).cost)
        metric = fermi.metric or answer_accuracy
        scoring_lm = with_budget(task_lm, self.budget)
        overrides: dict[str, Any] = {} if fermi.task_temperature is None else {"temperature": fermi.task_temperature}
        if uses_logprobs(metric):
            overrides.update(logprobs=True, top_logprobs=20)
        if overrides:
            scoring_lm = scoring_lm.copy(**overrides)
        self.task_meter.track(scoring_lm)
        num_threads = fermi.num_threads or dspy.settings.num_threads
        self.scorer = PromptScorer(student=self.student, base_instructions=self.base_instructions, metric=metric,
                                   lm=scoring_lm, num_threads=num_threads, failure_score=fermi.failure_score)
        signature = fermi._proposer_signature()
        self.proposer = Proposer(signature=signature, output_field=check_proposer_signature(signature),
                                 lm=with_budget(prompt_lm, self.budget), temperature=fermi.proposer_temperature,
                                 rng=self.rng, meter=self.proposer_meter, num_threads=num_threads,
                                 max_prompt_chars=fermi.max_prompt_chars)
        self.training_questions = [text for example in self.trainset for text in _question_texts(example)]
        self.memory = PromptMemory(self.search["memory_size"])
        self.seen: set[str] = set()
        self.stop_rules = fermi._stop_rules()

    @property
    def calls_per_candidate(self) -> int:
        return len(self.optimization)

    @property
    def one_at_a_time(self) -> bool:
        return self.fermi.max_lm_calls is not None or self.fermi.max_cost is not None

    # -- Step 2 ----------------------------------------------------------------------------------------------------

    def split(self, init: PersonalizedProgram | None) -> None:
        """Optimization examples and demonstrations; an update keeps the previous split and splits only new answers."""
        demo_fraction = self.fermi.demo_fraction
        if init is None:
            self.optimization, self.demonstrations = split_examples(self.trainset, demo_fraction, self.rng)
        else:
            router = init.router
            by_key = {example_key(example): example for example in self.trainset}
            old_optimization = [by_key[key] for key in router.example_keys[: router.num_optimization]]
            old_demos = [by_key[key] for key in router.demonstration_keys]
            known = set(router.example_keys[: router.num_optimization]) | set(router.demonstration_keys)
            new = [example for key, example in by_key.items() if key not in known]
            new_optimization, new_demos = split_examples(new, demo_fraction, self.rng) if len(new) >= 2 else (new, [])
            self.optimization, self.demonstrations = old_optimization + new_optimization, old_demos + new_demos
        logger.info("Fermi: %d optimization examples, %d demonstrations, T=%d K=%d L=%d.", len(self.optimization),
                    len(self.demonstrations), self.search["num_iterations"], self.search["num_candidates"],
                    self.search["memory_size"])

    # -- Step 3 ----------------------------------------------------------------------------------------------------

    def resume_memory(self, init: PersonalizedProgram) -> None:
        """The previous memory, each prompt scored on every optimization example: kept scores for the answers it
        saw, new LM calls for the new ones only."""
        router = init.router
        seen_at = {key: column for column, key in enumerate(router.example_keys[: router.num_optimization])}
        keys = [example_key(example) for example in self.optimization]
        new_columns = [i for i, key in enumerate(keys) if key not in seen_at]
        new_examples = [self.optimization[i] for i in new_columns]
        table = []
        if new_examples:
            with dspy.context(callbacks=[*dspy.settings.callbacks, self.task_meter]), \
                    progress.phase("rescoring", len(router.prompts) * len(new_examples), "update") as step:
                table = self.scorer.outcomes(router.prompts, new_examples, on_result=lambda *_: step.advance())
        self.rescored = len(router.prompts) * len(new_examples)
        restored = []
        for row, prompt in enumerate(router.prompts):
            fresh = dict(zip(new_columns, table[row], strict=True)) if table else {}
            scores, outputs, feedback, aligned = [], [], [], []
            for i, key in enumerate(keys):
                if i in fresh:
                    o = fresh[i]
                    scores.append(o.score)
                    outputs.append(o.output)
                    feedback.append(o.feedback)
                    aligned.append(o.aligned)
                else:
                    column = seen_at[key]
                    scores.append(router.scores[row][column])
                    outputs.append(_at(router.outputs, row, column, ""))
                    feedback.append(None)
                    aligned.append(_at(router.aligned, row, column, None))
            restored.append(ScoredPrompt(prompt, tuple(scores), tuple(outputs), tuple(feedback), iteration=-1,
                                         index=row, aligned=tuple(aligned)))
            self.seen.add(prompt_key(prompt))
        self.memory.merge(restored)
        self.created = len(restored)
        self.updated_from = len(restored)

    # -- Step 4 ----------------------------------------------------------------------------------------------------

    def iterate(self, iterations: int, *, start_from_profile: bool) -> None:
        """Run the iterations: propose, score, remember, then stop early if a stop rule says so."""
        per_candidate = self.calls_per_candidate
        bar = tqdm(total=iterations * self.search["num_candidates"] * per_candidate, desc="Fermi scoring",
                   unit="call", disable=not self.fermi.display_progress, leave=False, dynamic_ncols=True)
        try:
            for iteration in range(iterations):
                detail = f"iteration {iteration + 1}/{iterations}"
                rejected_before, salvaged_before = Counter(self.proposer.rejected), self.proposer.salvaged
                candidates = self.propose(iteration, detail, start_from_profile and iteration == 0)
                scored = self.score(candidates, iteration, detail, bar)
                previous_best = self.memory.best.mean_score if self.memory.best else None
                self.remember(iteration, scored, rejected_before, self.proposer.salvaged - salvaged_before, bar)
                reason = self.should_stop(iteration, iterations, previous_best)
                if reason is not None:
                    self.stop_reason = reason
                    break
        finally:
            bar.close()
        if not len(self.memory):
            raise RuntimeError(
                "Fermi scored no prompt at all: the LM-call budget is smaller than one candidate's scoring "
                f"({per_candidate} calls). Raise max_lm_calls."
            )

    def _affordable_proposals(self, already: int) -> int:
        """How many proposals fit in the budget, counting the scoring each proposal will need."""
        if self.fermi.max_lm_calls is None:
            return self.search["num_candidates"]
        left = self.fermi.max_lm_calls - self.budget.used - already * self.calls_per_candidate
        return max(0, left // (self.calls_per_candidate + 1))

    def propose(self, iteration: int, detail: str, with_profile_prompt: bool) -> list[str]:
        """This iteration's candidates: the profile prompt first at the start, then the proposer's."""
        candidates: list[str] = []
        wanted = self.search["num_candidates"]
        if with_profile_prompt:
            first = initial_prompt(self.profile)
            self.seen.add(prompt_key(first))
            candidates.append(first)
            wanted -= 1
        wanted = min(wanted, self._affordable_proposals(len(candidates)))
        if wanted <= 0:
            return candidates
        fermi = self.fermi
        scored_prompts = render_memory(
            self.memory.ascending(), self.optimization, threshold=fermi.misaligned_threshold,
            budget_chars=fermi.context_budget_chars, show_misaligned=fermi.feedback == "misaligned",
            max_prompt_chars=fermi.max_prompt_chars,
        )
        fields = {
            "profile": render_profile(self.profile) or "(no profile given)",
            "task": render_task(self.base_instructions),
            "demonstrations": render_demonstrations(self.demonstrations),
            "scored_prompts": scored_prompts,
        }
        planned = len(candidates) + wanted
        with dspy.context(callbacks=[*dspy.settings.callbacks, self.proposer_meter]), \
                progress.phase("proposing", wanted, detail):
            candidates += self.proposer.propose(wanted, fields, self.seen, training_questions=self.training_questions,
                                                can_retry=lambda: self._affordable_proposals(planned) > 0)
        return candidates

    def score(self, candidates: list[str], iteration: int, detail: str, bar: Any) -> list[ScoredPrompt]:
        """Score the candidates that fit in the budget on every optimization example."""
        per_candidate = self.calls_per_candidate
        fits = len(candidates)
        while fits and not self.budget.fits(fits * per_candidate):
            fits -= 1
        if fits < len(candidates):
            logger.warning("Fermi: LM-call budget of %s reached; scoring %d of %d candidates and stopping.",
                           self.fermi.max_lm_calls, fits, len(candidates))
            candidates, self.stop_reason = candidates[:fits], "budget"
        if not candidates:
            return []
        with dspy.context(callbacks=[*dspy.settings.callbacks, self.task_meter]), \
                progress.phase("scoring", len(candidates) * per_candidate, detail) as step:

            def advance(*_: Any) -> None:
                bar.update(1)
                step.advance()

            scored = self.scorer.score(candidates, self.optimization, iteration=iteration, first_index=self.created,
                                       on_result=advance, first_round=iteration == 0 and self.updated_from is None,
                                       one_at_a_time=self.one_at_a_time)
        self.created += len(scored)
        return scored

    def remember(self, iteration: int, scored: list[ScoredPrompt], rejected_before: Counter, salvaged: int,
                 bar: Any) -> None:
        """Keep the best L prompts (with their mis-aligned examples) and record the iteration."""
        self.memory.merge(scored)
        rejected = Counter(self.proposer.rejected)
        rejected.subtract(rejected_before)
        rejected_now = {reason: count for reason, count in rejected.items() if count > 0}
        record = IterationRecord(iteration, tuple(scored), tuple(p.mean_score for p in self.memory.ranked()),
                                 sum(rejected_now.values()), rejected_now, salvaged)
        self.records.append(record)
        bar.set_postfix(iteration=iteration, best=f"{record.best_score:.2f}")
        logger.info("Fermi iteration %d: scored %d candidate(s) %s; memory %s.", iteration + 1, len(scored),
                    [round(p.mean_score, 3) for p in scored], [round(s, 3) for s in record.memory_scores])

    def should_stop(self, iteration: int, iterations: int, previous_best: float | None) -> str | None:
        """The first stop rule's reason to stop, or None."""
        if self.stop_reason == "budget" or self.budget.exhausted:
            return "budget"
        state = IterationState(iteration, iterations, self.memory, previous_best, self.fermi.misaligned_threshold,
                               self.budget.fits, self.calls_per_candidate)
        for rule in self.stop_rules:
            reason = rule(state)
            if reason is not None:
                return reason
        return None

    # -- Step 5 ----------------------------------------------------------------------------------------------------

    def build(self, valset: list[dspy.Example] | None) -> PersonalizedProgram:
        """The program: the kept prompts, their scores on the user's past questions and those questions' embeddings."""
        fermi = self.fermi
        kept = self.memory.ranked()
        if valset and (self.budget.exhausted or not self.budget.fits(len(kept) * len(valset))):
            logger.warning("Fermi: the LM-call budget leaves no room to score the kept prompts on valset; skipped.")
            valset = None
        pool = list(self.optimization)
        scores = [list(p.scores) for p in kept]
        if valset:
            with dspy.context(callbacks=[*dspy.settings.callbacks, self.task_meter]):
                table = self.scorer.outcomes([p.prompt for p in kept], valset)
            if any(o.unscored for row in table for o in row):
                logger.warning("Fermi: the LM-call budget ran out while scoring valset; valset is not used.")
            else:
                pool += list(valset)
                scores = [row + [o.score for o in extra] for row, extra in zip(scores, table, strict=True)]
        texts = [query_text(example.inputs(), fermi.retrieval_fields) for example in pool]
        if fermi.embedder is None:
            embedder: Any = TfidfEmbedder().fit(texts)
            embedder_state = embedder.dump_state()
        else:
            embedder, embedder_state = fermi.embedder, None
        router = PromptRouter(
            prompts=[p.prompt for p in kept],
            base_instructions=self.base_instructions,
            scores=scores,
            embeddings=embed(embedder, texts).tolist() if fermi.selection == "retrieval" else [],
            selection=fermi.selection,
            num_retrieved=fermi.num_retrieved,
            retrieval_fields=fermi.retrieval_fields,
            embedder_state=embedder_state,
            example_keys=[example_key(example) for example in pool],
            num_optimization=len(self.optimization),
            demonstration_keys=[example_key(example) for example in self.demonstrations],
            outputs=[list(p.outputs) for p in kept],
            aligned=[list(p.aligned) for p in kept],
            profile_key=profile_key(self.profile),
        )
        program = PersonalizedProgram(self.student, router=router, embedder=fermi.embedder)
        program.detailed_results = FermiResult(
            memory=tuple(kept),
            iterations=tuple(self.records),
            stop_reason=self.stop_reason,
            num_optimization_examples=len(self.optimization),
            num_demonstration_examples=len(self.demonstrations),
            task_usage=self.task_meter.usage(),
            proposer_usage=self.proposer_meter.usage(),
            seconds=time.perf_counter() - self.started,
            updated_from=self.updated_from,
            rescored_calls=self.rescored,
        )
        logger.info("Fermi done (%s): best %.3f, %d task + %d proposer LM calls, %.1f s.", self.stop_reason,
                    program.detailed_results.best_score, self.task_meter.calls, self.proposer_meter.calls,
                    program.detailed_results.seconds)
        return program


def _at(table: Sequence[Sequence[Any]], row: int, column: int, default: Any) -> Any:
    try:
        return table[row][column]
    except IndexError:
        return default
