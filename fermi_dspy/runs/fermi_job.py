"""`FermiJob`: personalize one user with Fermi, score the result on the user's held-out answers, save the program."""

import importlib
import inspect
import json
import logging
import random
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dspy

from fermi_dspy import progress
from fermi_dspy.accounting import BudgetExhaustedError, CallBudget, tokens_of, with_budget
from fermi_dspy.metrics import answer_accuracy, call_metric, normalize_metric_output
from fermi_dspy.optimizer import CallPlan, Fermi, check_init, render_task, split_examples
from fermi_dspy.parallel import parallel_map
from fermi_dspy.profile import initial_prompt, render_profile
from fermi_dspy.program import PersonalizedProgram
from fermi_dspy.proposal import render_demonstrations
from fermi_dspy.runs.estimate import reply_chars, request_chars
from fermi_dspy.runs.jobs import JobContext, JobOutput, UserData, UserJob, WorkEstimate, describe_object
from fermi_dspy.scoring import render_output
from fermi_dspy.signatures import ProposePersonalizedPrompt, ProposePromptFromScores
from fermi_dspy.validation import MIN_TRAINSET_SIZE, validate_examples
from fermi_dspy.variants import compose_instruction, target_instructions

logger = logging.getLogger(__name__)

DEFAULT_STUDENT = "fermi_dspy.programs:OpinionQA"

#: Fermi arguments the run sets itself, with the run option to use instead.
RESERVED_FERMI_ARGUMENTS = {
    "prompt_model": "proposer_lm",
    "task_model": "task_lm",
    "max_lm_calls": "max_calls_per_user / max_calls_per_run",
    "max_cost": "max_cost_per_user / max_cost_per_run",
    "seed": "seed",
    "num_threads": "num_threads",
    "display_progress": "display_progress",
}

_TYPICAL_PROPOSAL_CHARS = 400
_SAMPLED_EXAMPLES = 5


def resolve_student(student: dspy.Module | str | Callable[[], dspy.Module] | None) -> dspy.Module:
    """The student program from an instance, a zero-argument factory, or an import path "module:attribute"."""
    if student is None:
        student = DEFAULT_STUDENT
    if isinstance(student, str):
        module_name, _, attribute = student.partition(":")
        if not attribute:
            raise ValueError(f"student {student!r}: write <module>:<class or function>, e.g. {DEFAULT_STUDENT}.")
        student = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(student, dspy.Module) and callable(student):
        student = student()
    if not isinstance(student, dspy.Module):
        raise TypeError(f"student must be a dspy.Module, got {type(student).__name__}.")
    return student


def _program_json(program: PersonalizedProgram) -> str:
    with tempfile.TemporaryDirectory(prefix="fermi-program-") as folder:
        path = Path(folder) / "program.json"
        program.save(str(path))
        return path.read_text()


class FermiJob(UserJob):
    """Personalize one user with `Fermi`, then score the personalized program on the user's test examples.

    Writes users/<id>/program.json (load it with `PersonalizedProgram(student).load(path)`) and details.json (the
    compile's `FermiResult`, iteration by iteration, and the test answers). The user's LM-call allotment covers both:
    the compile gets the allotment minus one call per test example, and the evaluation whatever is left.

    Args:
        student: The program to personalize: a `dspy.Module`, a zero-argument factory, or "module:attribute"
            (default `fermi_dspy.programs:OpinionQA`).
        fermi: `Fermi` arguments (num_iterations, num_candidates, memory_size, retrieval_fields, metric, ...). The LMs,
            call and cost caps, seed, threads and progress are set by the run.
        evaluate: Score the personalized program on each user's test examples.
    """

    name = "fermi"
    updates_changed_users = True
    previous_files = ("program.json",)

    def __init__(
        self,
        student: dspy.Module | str | Callable[[], dspy.Module] | None = None,
        *,
        fermi: Mapping[str, Any] | None = None,
        evaluate: bool = True,
    ) -> None:
        settings = dict(fermi or {})
        reserved = sorted(set(settings) & set(RESERVED_FERMI_ARGUMENTS))
        if reserved:
            hints = ", ".join(f"{k} -> {RESERVED_FERMI_ARGUMENTS[k]}" for k in reserved)
            raise ValueError(f"Fermi arguments {reserved} are set by the run; use the run's options instead ({hints}).")
        known = set(inspect.signature(Fermi.__init__).parameters) - {"self"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"unknown Fermi arguments {unknown}; see help(fermi_dspy.Fermi).")
        self.optimizer = Fermi(**settings, display_progress=False)  # checks the values now, before any user runs
        self.fermi = settings
        self.student = resolve_student(student)
        self.evaluate = evaluate
        self._base_instructions = target_instructions(self.student, self.optimizer.predictors)

    def describe(self) -> dict[str, Any]:
        student = type(self.student)
        params = {k: v for k, v in self.optimizer.get_params().items() if k not in RESERVED_FERMI_ARGUMENTS}
        return {
            "name": self.name,
            "student": f"{student.__module__}.{student.__qualname__}",
            "student_instructions": self._base_instructions,
            "fermi": describe_object(params),
            "evaluate": self.evaluate,
        }

    def check(self, user: UserData) -> str | None:
        check_answers = self.optimizer.metric is None
        try:
            validate_examples(list(user.train), name="train", student=self.student, min_size=MIN_TRAINSET_SIZE,
                              check_answers=check_answers)
            if self.evaluate and user.test:
                validate_examples(list(user.test), name="test", student=self.student, check_answers=check_answers)
            render_profile(user.profile)
        except (TypeError, ValueError) as exc:
            return str(exc)
        return None

    # -- estimate -------------------------------------------------------------------------------------------------

    def _task_chars(self, prompt: str, examples: list[dspy.Example]) -> tuple[int, int, int]:
        """(request chars, typical reply chars, longest reply chars) of one task call, averaged over a few examples."""
        name, base = next(iter(self._base_instructions.items()))
        signature = dict(self.student.named_predictors())[name].signature
        signature = signature.with_instructions(compose_instruction(prompt, base))
        sample = examples[:_SAMPLED_EXAMPLES] or [None]
        request = reply = longest = 0
        for example in sample:
            inputs, labels = (dict(example.inputs()), dict(example.labels())) if example is not None else ({}, {})
            request += request_chars(signature, {k: inputs.get(k, "") for k in signature.input_fields})
            outputs = {k: labels.get(k, "") for k in signature.output_fields}
            reply += reply_chars(outputs)
            options = example.get("options") if example is not None else None
            widest = max((str(o) for o in options), key=len) if isinstance(options, list) and options else ""
            longest += reply_chars({k: max(str(v), widest, key=len) for k, v in outputs.items()})
        n = len(sample)
        return request // n, reply // n, longest // n

    def _proposer_chars(self, user: UserData, demonstrations: list[dspy.Example], scored_chars: int) -> int:
        signature = self.optimizer.proposer_signature or (
            ProposePersonalizedPrompt if self.optimizer.feedback == "misaligned" else ProposePromptFromScores)
        fields = {
            "profile": render_profile(user.profile) or "(no profile given)",
            "task": render_task(self._base_instructions),
            "demonstrations": render_demonstrations(demonstrations),
            "scored_prompts": "x" * scored_chars,
        }
        return request_chars(signature, {k: fields[k] for k in signature.input_fields})

    def _plan(self, user: UserData) -> CallPlan:
        """The compile's calls at most (`Fermi.call_plan`), one LM call per personalized predictor per example."""
        return self.optimizer.call_plan(len(user.train), predictors=len(self._base_instructions))

    def _test_calls(self, user: UserData) -> int:
        return (len(user.test) if self.evaluate else 0) * len(self._base_instructions)

    def call_bounds(self, user: UserData, *, seed: int = 0) -> tuple[int, int]:
        plan, testing = self._plan(user), self._test_calls(user)
        return plan.first_candidate_calls + testing, plan.calls + testing

    def estimate(self, user: UserData, *, seed: int = 0) -> WorkEstimate:
        o = self.optimizer
        train, test = list(user.train), list(user.test) if self.evaluate else []
        optimization, demonstrations = split_examples(train, o.demo_fraction, random.Random(seed))
        plan, testing = self._plan(user), self._test_calls(user)
        task_calls, proposals = plan.task_calls + testing, plan.proposer_calls

        typical_prompt = initial_prompt(user.profile) or "x" * _TYPICAL_PROPOSAL_CHARS
        request, reply, _ = self._task_chars(typical_prompt, optimization + test)
        request_max, _, reply_max = self._task_chars("x" * o.max_prompt_chars, optimization + test)
        proposer = self._proposer_chars(user, demonstrations, o.context_budget_chars // 2)
        proposer_max = self._proposer_chars(user, demonstrations, o.context_budget_chars)
        proposal = reply_chars({"new_prompt": "x" * min(o.max_prompt_chars, _TYPICAL_PROPOSAL_CHARS)})
        proposal_max = reply_chars({"new_prompt": "x" * o.max_prompt_chars})
        return WorkEstimate(
            calls_max=task_calls + proposals,
            min_calls=plan.first_candidate_calls + testing,
            task_calls=task_calls,
            proposer_calls=proposals,
            prompt_tokens=task_calls * tokens_of(request) + proposals * tokens_of(proposer),
            completion_tokens=task_calls * tokens_of(reply) + proposals * tokens_of(proposal),
            prompt_tokens_max=task_calls * tokens_of(request_max) + proposals * tokens_of(proposer_max),
            completion_tokens_max=task_calls * tokens_of(reply_max) + proposals * tokens_of(proposal_max),
        )

    # -- run ------------------------------------------------------------------------------------------------------

    def run(self, user: UserData, context: JobContext) -> JobOutput:
        test = list(user.test) if self.evaluate else []
        compile_calls = None if context.max_calls is None else context.max_calls - len(test)
        compile_cost = context.max_cost
        if compile_cost is not None and test:  # keep the test's share of the USD allotment for the test
            plan = self._plan(user)
            compile_cost *= plan.calls / (plan.calls + self._test_calls(user))
        optimizer = Fermi(
            **self.fermi, prompt_model=context.proposer_lm, task_model=context.task_lm, max_lm_calls=compile_calls,
            max_cost=compile_cost, seed=context.seed, num_threads=context.num_threads, display_progress=False,
        )
        init, update = self._earlier_program(user, context)
        program = optimizer.compile(self.student, trainset=list(user.train), profile=user.profile, init=init)
        compiled = program.detailed_results
        if init is not None:
            update.update(rescored_calls=compiled.rescored_calls, prompts_before=len(init.prompts))
        compile_calls_used = context.usage().calls
        scores, answers = self._evaluate(program, test, context) if test else ([], [])
        routes = [program.route(**example.inputs()) for example in test]  # no LM call
        scored = [s for s in scores if s is not None]
        unscored = len(scores) - len(scored)
        result = {
            "train_score": compiled.best_score,
            "test_accuracy": sum(scored) / len(scored) if scored else None,
            "test_scored": len(scored),
            "test_unscored": unscored,
            "stop_reason": compiled.stop_reason,
            "n_train": len(user.train),
            "n_test": len(test),
            "n_optimization": compiled.num_optimization_examples,
            "n_demonstrations": compiled.num_demonstration_examples,
            "candidates_scored": compiled.num_candidates_scored,
            "proposals_rejected": dict(compiled.proposals_rejected),
            "proposals_salvaged": compiled.proposals_salvaged,
            "prompts_kept": len(program.prompts),
            "best_prompt": program.prompts[program.best_index],
            "test_routed_past_best": sum(route != program.best_index for route in routes),
            **({"update": update} if update is not None else {}),
            "calls": {
                "compile_task": compiled.task_usage.calls,
                "compile_proposer": compiled.proposer_usage.calls,
                "test": context.usage().calls - compile_calls_used,
            },
        }
        details = {key: value for key, value in compiled.to_dict().items() if key != "seconds"}
        details["test"] = {"scores": scores, "answers": answers, "prompt_index": routes}
        files = {"program.json": _program_json(program), "details.json": json.dumps(details, indent=1, default=str)}
        return JobOutput(result, files, budget_limited=compiled.stop_reason == "budget" or unscored > 0)

    def _earlier_program(self, user: UserData, context: JobContext) -> tuple[PersonalizedProgram | None,
                                                                             dict[str, Any] | None]:
        """For a user whose input changed: its earlier program to update from (None: compile afresh) and what the
        result records about the update. A program that learned from answers no longer in the training split (the
        seeded split moved them to test, or they were removed) cannot be updated: the user is compiled afresh, and
        the reason is recorded and logged."""
        if not context.changed_input:
            return None, None
        text = context.previous_files.get("program.json")
        if text is None:
            reason = "its earlier program.json is missing"
        else:
            with tempfile.TemporaryDirectory(prefix="fermi-program-") as folder:
                path = Path(folder) / "program.json"
                path.write_text(text, encoding="utf-8")
                earlier = PersonalizedProgram(self.student, embedder=self.optimizer.embedder)
                earlier.load(str(path))
            try:
                check_init(earlier, list(user.train), user.profile, self._base_instructions)
            except (TypeError, ValueError) as exc:
                reason = str(exc)
            else:
                logger.info("User %s: its input changed; updating its program from the earlier one.", user.user_id)
                return earlier, {"mode": "incremental"}
        logger.warning("User %s: its input changed but its program cannot be updated (%s); compiling afresh.",
                       user.user_id, reason)
        return None, {"mode": "fresh", "reason": reason}

    def _evaluate(
        self, program: dspy.Module, test: list[dspy.Example], context: JobContext, label: str = "fermi"
    ) -> tuple[list[float | None], list[str]]:
        """Score the program on the test examples within what is left of the user's allotment (None: unscored).

        A personalized program's questions are answered grouped by the prompt it routes them to (routing needs no LM),
        so consecutive calls share that prompt's prefix; results keep the test order.
        """
        left = None if context.max_calls is None else max(0, context.max_calls - context.usage().calls)
        budget = CallBudget(left, context.max_cost, lambda: context.usage().cost)
        lm = with_budget(context.task_lm, budget)
        metric = self.optimizer.metric or answer_accuracy

        def one(example: dspy.Example) -> tuple[float | None, str]:
            try:
                with dspy.context(lm=lm):
                    prediction = program(**example.inputs())
            except BudgetExhaustedError:
                return None, ""
            except Exception as exc:
                logger.warning("A test example failed (scored 0): %s: %s", type(exc).__name__, exc)
                return 0.0, f"[error] {type(exc).__name__}"
            try:
                return (normalize_metric_output(call_metric(metric, example, prediction)).score,
                        render_output(example, prediction))
            except Exception as exc:
                logger.warning("The metric raised on a test example (scored 0): %s: %s", type(exc).__name__, exc)
                return 0.0, render_output(example, prediction)

        order = list(range(len(test)))
        if isinstance(program, PersonalizedProgram):
            routes = [program.route(**example.inputs()) for example in test]
            order.sort(key=lambda i: routes[i])
        with progress.phase("testing", len(test), label) as step:
            rows = parallel_map(one, [test[i] for i in order], num_threads=context.num_threads,
                                on_result=lambda *_: step.advance())
        placed = [row for _, row in sorted(zip(order, rows, strict=True), key=lambda pair: pair[0])]  # test order
        return [r[0] for r in placed], [r[1] for r in placed]
