"""Fermi: few-shot personalization of LLMs with mis-aligned responses (Kim & Yang, NAACL 2025), as a teleprompter."""

import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import dspy
from dspy.teleprompt.teleprompt import Teleprompter
from tqdm import tqdm

from fermi_dspy import progress
from fermi_dspy.accounting import CallBudget, UsageMeter, with_budget
from fermi_dspy.memory import PromptMemory, ScoredPrompt
from fermi_dspy.metrics import Metric, answer_accuracy, metric_arity, uses_logprobs
from fermi_dspy.profile import Profile, initial_prompt, render_profile, validate_profile
from fermi_dspy.program import PersonalizedProgram
from fermi_dspy.proposal import Proposer, prompt_key, render_demonstrations, render_memory
from fermi_dspy.result import FermiResult, IterationRecord
from fermi_dspy.scoring import PromptScorer
from fermi_dspy.selection import Embedder, PromptRouter, Selection, TfidfEmbedder, check_selection, embed, query_text
from fermi_dspy.signatures import ProposePersonalizedPrompt, ProposePromptFromScores, check_proposer_signature
from fermi_dspy.validation import MIN_TRAINSET_SIZE, validate_examples
from fermi_dspy.variants import target_instructions

logger = logging.getLogger(__name__)

Feedback = Literal["misaligned", "scores"]


def split_examples(
    examples: Sequence[dspy.Example], demo_fraction: float, rng: random.Random
) -> tuple[list[dspy.Example], list[dspy.Example]]:
    """Split a user's examples into optimization examples (scored) and demonstrations (shown to the proposer).

    At least one example is always kept for optimization; with `demo_fraction` > 0 and two or more examples, at
    least one is a demonstration. Both parts keep the trainset's order.
    """
    n = len(examples)
    n_demo = round(n * demo_fraction)
    if demo_fraction > 0 and n >= 2:
        n_demo = max(1, n_demo)
    n_demo = min(n_demo, n - 1)
    demo_indices = set(rng.sample(range(n), n_demo))
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
        prompt_model: The proposer LM. Defaults to the task LM.
        task_model: The LM that answers the user's questions. Defaults to `dspy.settings.lm` at compile time.
        num_iterations: Iterations T, the initialization included (paper: 10).
        num_candidates: New prompts K per iteration (paper: 4).
        memory_size: Prompts L kept in memory (paper: 5).
        misaligned_threshold: Scores below it make an example mis-aligned (paper's tau: 1.0 for exact answers).
        demo_fraction: Share of the trainset shown to the proposer as demonstrations instead of scored (paper: 0.2).
        selection: "retrieval" (Retrieval-of-Prompt) or "best".
        num_retrieved: Past questions consulted per query by Retrieval-of-Prompt (paper: 3).
        embedder: A `dspy.Embedder` or callable `list[str] -> array` for retrieval; None fits TF-IDF on the user's
            own questions (offline, saved with the program).
        retrieval_fields: Input fields embedded for retrieval; None embeds all inputs.
        predictors: Names of the student's predictors to personalize; None personalizes all.
        feedback: "misaligned" (Fermi) or "scores" (OPRO-style: the proposer sees prompts and scores only).
        proposer_signature: Replaces the proposer's Signature; see `fermi_dspy.signatures`.
        proposer_temperature: Sampling temperature of the proposer (paper: 1.0).
        task_temperature: Temperature of the task LM while scoring (paper: 0.0); None keeps the LM's own.
        context_budget_chars: Character budget of the memory and mis-aligned examples shown to the proposer.
        max_prompt_chars: Longest prompt kept; longer proposals are cut.
        patience: Stop after this many iterations without a better best prompt; None never stops early this way.
        max_lm_calls: Hard cap on task plus proposer LM calls for one compile (adapter retries included); None is no
            cap. Steps that would not fit are not started; the compile stops and keeps its best prompts
            (`stop_reason="budget"`).
        max_cost: Cap in USD on the compile's LM calls, where DSPy reports cost (hosted LiteLLM models); checked
            before each call.
        num_threads: Threads for scoring and proposing; None uses `dspy.settings.num_threads`.
        failure_score: Score of an example whose LM call failed after retries.
        seed: Seeds the split and the proposer's rollouts; the same seed and a deterministic LM give the same result.
        display_progress: Show a progress bar while compiling.

    Examples:
        ```python
        import dspy
        from fermi_dspy import Fermi

        program = dspy.Predict("question, options: list[str] -> answer")
        optimizer = Fermi(prompt_model=dspy.LM("openai/gpt-4o"), task_model=dspy.LM("openai/gpt-4o-mini"))
        personal = optimizer.compile(program, trainset=user_examples, profile={"Age": "65+", "Party": "Republican"})
        personal(question="...", options=["Yes", "No"]).answer
        personal.save("user_123.json")
        ```
    """

    def __init__(
        self,
        metric: Metric | None = None,
        *,
        prompt_model: dspy.BaseLM | None = None,
        task_model: dspy.BaseLM | None = None,
        num_iterations: int = 10,
        num_candidates: int = 4,
        memory_size: int = 5,
        misaligned_threshold: float = 1.0,
        demo_fraction: float = 0.2,
        selection: Selection = "retrieval",
        num_retrieved: int = 3,
        embedder: Embedder | None = None,
        retrieval_fields: Sequence[str] | None = None,
        predictors: Sequence[str] | None = None,
        feedback: Feedback = "misaligned",
        proposer_signature: type[dspy.Signature] | None = None,
        proposer_temperature: float = 1.0,
        task_temperature: float | None = 0.0,
        context_budget_chars: int = 8000,
        max_prompt_chars: int = 1500,
        patience: int | None = None,
        max_lm_calls: int | None = None,
        max_cost: float | None = None,
        num_threads: int | None = None,
        failure_score: float = 0.0,
        seed: int = 0,
        display_progress: bool = True,
    ) -> None:
        check_selection(selection)
        if metric is not None:
            metric_arity(metric)  # a metric that cannot be called fails here, not after the first LM calls
        if feedback not in ("misaligned", "scores"):
            raise ValueError(f"feedback={feedback!r}; use 'misaligned' (Fermi) or 'scores' (OPRO-style).")
        if proposer_signature is not None:
            check_proposer_signature(proposer_signature)
        for name, value, low in (
            ("num_iterations", num_iterations, 1),
            ("num_candidates", num_candidates, 1),
            ("memory_size", memory_size, 1),
            ("num_retrieved", num_retrieved, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        if not 0.0 <= demo_fraction < 1.0:
            raise ValueError(f"demo_fraction must be in [0, 1), got {demo_fraction!r}.")
        self.metric = metric
        self.prompt_model = prompt_model
        self.task_model = task_model
        self.num_iterations = num_iterations
        self.num_candidates = num_candidates
        self.memory_size = memory_size
        self.misaligned_threshold = misaligned_threshold
        self.demo_fraction = demo_fraction
        self.selection = selection
        self.num_retrieved = num_retrieved
        self.embedder = embedder
        self.retrieval_fields = retrieval_fields
        self.predictors = predictors
        self.feedback = feedback
        self.proposer_signature = proposer_signature
        self.proposer_temperature = proposer_temperature
        self.task_temperature = task_temperature
        self.context_budget_chars = context_budget_chars
        self.max_prompt_chars = max_prompt_chars
        self.patience = patience
        self.max_lm_calls = max_lm_calls
        self.max_cost = max_cost
        self.num_threads = num_threads
        self.failure_score = failure_score
        self.seed = seed
        self.display_progress = display_progress

    def _resolve_lms(self) -> tuple[dspy.BaseLM, dspy.BaseLM]:
        task_lm = self.task_model or dspy.settings.lm
        if task_lm is None:
            raise ValueError(
                "Fermi needs a task LM: pass Fermi(task_model=dspy.LM(...)) or call dspy.configure(lm=...) first."
            )
        return task_lm, self.prompt_model or task_lm

    def compile(
        self,
        student: dspy.Module,
        *,
        trainset: list[dspy.Example],
        profile: Profile = None,
        valset: list[dspy.Example] | None = None,
    ) -> PersonalizedProgram:
        """Personalize `student` to one user; the student is left unchanged.

        Args:
            student: The DSPy program to personalize.
            trainset: This user's past answers (at least 2), inputs marked with `.with_inputs(...)`.
            profile: This user's profile: a dict of attributes, a text, or None.
            valset: More of this user's answers, optional. The kept prompts are also scored on them, and they join
                the past questions Retrieval-of-Prompt chooses from.

        Returns:
            A `PersonalizedProgram`; its `detailed_results` (a `FermiResult`, not saved) records the run.

        Raises:
            TypeError, ValueError: Bad input, raised before any LM call.
        """
        # STEP 0: check every input before any LM call.
        if not isinstance(student, dspy.Module):
            raise TypeError(f"student must be a dspy.Module (e.g. dspy.Predict), got {type(student).__name__}.")
        validate_profile(profile)
        base_instructions = target_instructions(student, self.predictors)
        check_answers = self.metric is None
        validate_examples(trainset, name="trainset", student=student, min_size=MIN_TRAINSET_SIZE,
                          check_answers=check_answers)
        if valset is not None:
            validate_examples(valset, name="valset", student=student, check_answers=check_answers)
        task_lm, prompt_lm = self._resolve_lms()
        signature = self.proposer_signature or (
            ProposePersonalizedPrompt if self.feedback == "misaligned" else ProposePromptFromScores
        )
        output_field = check_proposer_signature(signature)
        num_threads = self.num_threads or dspy.settings.num_threads
        started = time.perf_counter()

        # STEP 1: split the user's answers into optimization examples and demonstrations.
        rng = random.Random(self.seed)
        optimization, demonstrations = split_examples(trainset, self.demo_fraction, rng)
        logger.info("Fermi: %d optimization examples, %d demonstrations, T=%d K=%d L=%d.", len(optimization),
                    len(demonstrations), self.num_iterations, self.num_candidates, self.memory_size)

        task_meter, proposer_meter = UsageMeter(), UsageMeter()
        budget = CallBudget(self.max_lm_calls, self.max_cost,
                            lambda: (task_meter.usage() + proposer_meter.usage()).cost)
        metric = self.metric or answer_accuracy
        scoring_lm = with_budget(task_lm, budget)
        overrides: dict[str, Any] = {} if self.task_temperature is None else {"temperature": self.task_temperature}
        if uses_logprobs(metric):
            overrides.update(logprobs=True, top_logprobs=20)
        if overrides:
            scoring_lm = scoring_lm.copy(**overrides)
        task_meter.track(scoring_lm)
        prompt_lm = with_budget(prompt_lm, budget)
        scorer = PromptScorer(student=student, base_instructions=base_instructions, metric=metric, lm=scoring_lm,
                              num_threads=num_threads, failure_score=self.failure_score)
        training_questions = [text for example in trainset for text in _question_texts(example)]
        proposer = Proposer(signature=signature, output_field=output_field, lm=prompt_lm,
                            temperature=self.proposer_temperature, rng=rng, meter=proposer_meter,
                            num_threads=num_threads, max_prompt_chars=self.max_prompt_chars)
        context = {
            "profile": render_profile(profile) or "(no profile given)",
            "task": render_task(base_instructions),
            "demonstrations": render_demonstrations(demonstrations),
        }
        memory = PromptMemory(self.memory_size)
        seen: set[str] = set()
        records: list[IterationRecord] = []
        stop_reason, stale, created = "completed", 0, 0
        calls_per_candidate = len(optimization)

        def spent() -> int:
            return budget.used

        def affordable(calls: int) -> bool:
            return budget.fits(calls)

        bar = tqdm(total=self.num_iterations * self.num_candidates * calls_per_candidate, desc="Fermi scoring",
                   unit="call", disable=not self.display_progress, leave=False, dynamic_ncols=True)
        try:
            for iteration in range(self.num_iterations):
                # STEP 2: propose. Iteration 0 starts from the profile prompt plus profile-conditioned proposals.
                rejected_before = Counter(proposer.rejected)
                detail = f"iteration {iteration + 1}/{self.num_iterations}"
                candidates: list[str] = []
                wanted = self.num_candidates
                if iteration == 0:
                    first = initial_prompt(profile)
                    seen.add(prompt_key(first))
                    candidates.append(first)
                    wanted -= 1
                scored_prompts = render_memory(
                    memory.ascending(), optimization, threshold=self.misaligned_threshold,
                    budget_chars=self.context_budget_chars, show_misaligned=self.feedback == "misaligned",
                    max_prompt_chars=self.max_prompt_chars,
                )
                wanted = min(wanted, self._affordable_proposals(spent(), calls_per_candidate, len(candidates)))
                if wanted > 0:
                    planned = len(candidates) + wanted

                    def can_retry(planned: int = planned) -> bool:
                        return self._affordable_proposals(spent(), calls_per_candidate, planned) > 0

                    with dspy.context(callbacks=[*dspy.settings.callbacks, proposer_meter]), \
                            progress.phase("proposing", wanted, detail):
                        candidates += proposer.propose(wanted, {**context, "scored_prompts": scored_prompts}, seen,
                                                       training_questions=training_questions, can_retry=can_retry)

                # STEP 3: score every new candidate on every optimization example.
                fits = len(candidates)
                while fits and not affordable(fits * calls_per_candidate):
                    fits -= 1
                if fits < len(candidates):
                    logger.warning("Fermi: LM-call budget of %s reached; scoring %d of %d candidates and stopping.",
                                   self.max_lm_calls, fits, len(candidates))
                    candidates, stop_reason = candidates[:fits], "budget"
                if candidates:
                    with dspy.context(callbacks=[*dspy.settings.callbacks, task_meter]), \
                            progress.phase("scoring", len(candidates) * calls_per_candidate, detail) as step:

                        def advance(*_: Any) -> None:
                            bar.update(1)
                            step.advance()

                        scored = scorer.score(candidates, optimization, iteration=iteration, first_index=created,
                                              on_result=advance, first_round=iteration == 0,
                                              one_at_a_time=self.max_lm_calls is not None or self.max_cost is not None)
                    created += len(scored)
                else:
                    scored = []

                # STEP 4: keep the best L prompts (with their mis-aligned examples) in memory.
                previous_best = memory.best.mean_score if memory.best else None
                memory.merge(scored)
                rejected = Counter(proposer.rejected)
                rejected.subtract(rejected_before)
                rejected_now = {reason: count for reason, count in rejected.items() if count > 0}
                record = IterationRecord(iteration, tuple(scored), tuple(p.mean_score for p in memory.ranked()),
                                         sum(rejected_now.values()), rejected_now)
                records.append(record)
                bar.set_postfix(iteration=iteration, best=f"{record.best_score:.2f}")
                logger.info("Fermi iteration %d/%d: scored %d candidate(s) %s; memory %s.", iteration + 1,
                            self.num_iterations, len(scored), [round(p.mean_score, 3) for p in scored],
                            [round(s, 3) for s in record.memory_scores])

                # STEP 5: stop early when nothing is left to learn, patience runs out, or the budget is spent.
                if stop_reason == "budget" or budget.exhausted:
                    stop_reason = "budget"
                    break
                if memory.best is not None and not memory.best.misaligned(self.misaligned_threshold):
                    stop_reason = "perfect"
                    break
                improved = memory.best is not None and (previous_best is None or memory.best.mean_score > previous_best)
                stale = 0 if improved else stale + 1
                if self.patience is not None and stale >= self.patience:
                    stop_reason = "patience"
                    break
                if iteration + 1 < self.num_iterations and not affordable(calls_per_candidate + 1):
                    stop_reason = "budget"
                    break
        finally:
            bar.close()

        if not len(memory):
            raise RuntimeError(
                "Fermi scored no prompt at all: the LM-call budget is smaller than one candidate's scoring "
                f"({calls_per_candidate} calls). Raise max_lm_calls."
            )

        # STEP 6: build the personalized program with Retrieval-of-Prompt's routing data.
        if valset and (budget.exhausted or not affordable(len(memory) * len(valset))):
            logger.warning("Fermi: the LM-call budget leaves no room to score the kept prompts on valset; skipped.")
            valset = None
        program = self._build_program(student, memory.ranked(), optimization, valset, scorer, base_instructions,
                                      task_meter)
        program.detailed_results = FermiResult(
            memory=tuple(memory.ranked()),
            iterations=tuple(records),
            stop_reason=stop_reason,
            num_optimization_examples=len(optimization),
            num_demonstration_examples=len(demonstrations),
            task_usage=task_meter.usage(),
            proposer_usage=proposer_meter.usage(),
            seconds=time.perf_counter() - started,
        )
        logger.info("Fermi done (%s): best %.3f, %d task + %d proposer LM calls, %.1f s.", stop_reason,
                    program.detailed_results.best_score, task_meter.calls, proposer_meter.calls,
                    program.detailed_results.seconds)
        return program

    def _affordable_proposals(self, spent: int, calls_per_candidate: int, already: int) -> int:
        """How many proposals fit in the budget, counting the scoring each proposal will need."""
        if self.max_lm_calls is None:
            return self.num_candidates
        left = self.max_lm_calls - spent - already * calls_per_candidate
        return max(0, left // (calls_per_candidate + 1))

    def _build_program(
        self,
        student: dspy.Module,
        kept: list[ScoredPrompt],
        optimization: list[dspy.Example],
        valset: list[dspy.Example] | None,
        scorer: PromptScorer,
        base_instructions: dict[str, str],
        task_meter: UsageMeter,
    ) -> PersonalizedProgram:
        pool = list(optimization)
        scores = [list(p.scores) for p in kept]
        if valset:
            with dspy.context(callbacks=[*dspy.settings.callbacks, task_meter]):
                table = scorer.outcomes([p.prompt for p in kept], valset)
            if any(o.unscored for row in table for o in row):
                logger.warning("Fermi: the LM-call budget ran out while scoring valset; valset is not used.")
            else:
                pool += list(valset)
                scores = [row + [o.score for o in extra] for row, extra in zip(scores, table, strict=True)]
        texts = [query_text(example.inputs(), self.retrieval_fields) for example in pool]
        if self.embedder is None:
            embedder: Any = TfidfEmbedder().fit(texts)
            embedder_state = embedder.dump_state()
        else:
            embedder, embedder_state = self.embedder, None

        router = PromptRouter(
            prompts=[p.prompt for p in kept],
            base_instructions=base_instructions,
            scores=scores,
            embeddings=embed(embedder, texts).tolist() if self.selection == "retrieval" else [],
            selection=self.selection,
            num_retrieved=self.num_retrieved,
            retrieval_fields=self.retrieval_fields,
            embedder_state=embedder_state,
        )
        program = PersonalizedProgram(student, router=router, embedder=self.embedder)
        return program
