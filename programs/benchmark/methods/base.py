"""What every method gets (`UserTask`) and returns (`MethodResult`), and the shared compile-then-test steps."""

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import dspy

from fermi_dspy import option_index
from fermi_dspy.accounting import CallBudget, LMUsage, UsageMeter, wrap_lm
from fermi_dspy.runs import JobContext, UserData
from programs.benchmark.settings import BenchmarkSettings
from programs.evaluation import evaluate_on_test
from programs.tasks import TaskSpec, predicted_rating, rating_summary, task_for

logger = logging.getLogger(__name__)

STATUSES = ("ok", "cannot_run", "failed")
ROLES = ("task", "proposer", "test")


class CannotRunError(Exception):
    """A method cannot run on this user (e.g. too few training answers for its minimum); reported, not dropped."""


@dataclass(frozen=True)
class RoleUsage:
    """LM usage of one role of one method: calls (engine requests), tokens, and seconds inside LM calls."""

    usage: LMUsage = field(default_factory=LMUsage)
    lm_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.usage.to_dict(), "lm_seconds": round(self.lm_seconds, 4)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RoleUsage":
        return cls(LMUsage.from_dict(data), float(data.get("lm_seconds", 0.0)))


class Roles:
    """One method's copies of the user's LMs, one `UsageMeter` per role: the compile's task LM and proposer LM, and
    the LM answering the test questions. Within the user's LM-call allotment, if the run gave it one.

    Args:
        context: The user's job context (its guarded LMs count every call of the user).
    """

    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.meters = {role: UsageMeter() for role in ROLES}
        left = None if context.max_calls is None else max(0, context.max_calls - context.usage().calls)
        budget = CallBudget(left, context.max_cost, lambda: context.usage().cost)
        lms = {"task": context.task_lm, "proposer": context.proposer_lm, "test": context.task_lm}
        self.lms = {role: self.meters[role].track(wrap_lm(lm, budget)) for role, lm in lms.items()}
        self.task, self.proposer, self.test = self.lms["task"], self.lms["proposer"], self.lms["test"]

    def calls(self, *roles: str) -> int:
        return sum(self.meters[role].calls for role in roles or ROLES)

    def usage(self, role: str) -> RoleUsage:
        meter = self.meters[role]
        return RoleUsage(meter.usage(), meter.lm_seconds)


@dataclass(frozen=True)
class UserTask:
    """One user's data and the LMs and settings every method of the run uses.

    Attributes:
        user: The user's train/test split and profile (the same for every method).
        settings: The run's settings.
        context: The user's LMs (each method counts its own copies) and allotment.
        student: Builds a fresh student program.
    """

    user: UserData
    settings: BenchmarkSettings
    context: JobContext
    student: Callable[[], dspy.Module]

    @property
    def spec(self) -> TaskSpec:
        """The task of the run's data set (student, metrics, floor, few-shot view)."""
        return task_for(self.settings.dataset)

    def roles(self) -> Roles:
        """Fresh, separately counted copies of the LMs for one method."""
        return Roles(self.context)

    def calls(self) -> int:
        """Every LM call of this user so far (through any copy of its LMs)."""
        return self.context.usage().calls


@dataclass(frozen=True)
class MethodResult:
    """One method on one user: its score on the user's test answers and what it cost.

    Holds only ids, scores and counts: never a profile, an answer or a learned prompt (Pew's terms forbid publishing
    a respondent's profile together with answers, and prompts may quote both).

    Attributes:
        user_id: The user.
        method: The method's name.
        status: "ok", "cannot_run" (e.g. too few training answers; `reason` says why) or "failed" (an error).
        reason: Why the method did not run, or the error.
        accuracy: The mean test metric (None unless ok): the share of the user's test answers matched, or on the
            rating task the mean `rating_score` (1 - |error| / 4.5).
        correct: Test answers matched (ratings: within a star of the person's, the metric's "aligned").
        n_train: Training answers available.
        n_test: Test answers scored.
        test_failures: Test questions whose LM call failed (scored wrong).
        compile_task: Task-LM usage while compiling.
        compile_proposer: Proposer-LM usage while compiling.
        test: LM usage while answering the test questions.
        stray_calls: LM calls of the user not counted under any role (0 unless the accounting leaks).
        compile_seconds: Wall time of the compile (0 for methods without one).
        test_seconds: Wall time of answering the test questions.
        shared_compile: The method whose compile this one reuses (its costs are repeated here), if any.
        details: Method-specific facts (stop reason, candidates scored, ...), never text from the user.
        mae: Rating task: mean absolute error in stars over the test answers that held a rating (else None).
        rmse: Rating task: root mean squared error, likewise.
        program: The compiled program that answered the test questions (None for methods without one). Never
            written into the method's result: `BenchmarkJob(keep_programs=True)` saves it apart, for reading.
    """

    user_id: str
    method: str
    status: str
    reason: str = ""
    accuracy: float | None = None
    correct: int = 0
    n_train: int = 0
    n_test: int = 0
    test_failures: int = 0
    compile_task: RoleUsage = field(default_factory=RoleUsage)
    compile_proposer: RoleUsage = field(default_factory=RoleUsage)
    test: RoleUsage = field(default_factory=RoleUsage)
    stray_calls: int = 0
    compile_seconds: float = 0.0
    test_seconds: float = 0.0
    shared_compile: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    mae: float | None = None
    rmse: float | None = None
    program: dspy.Module | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}.")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def compile_calls(self) -> int:
        return self.compile_task.usage.calls + self.compile_proposer.usage.calls

    @property
    def total_calls(self) -> int:
        return self.compile_calls + self.test.usage.calls

    @property
    def total_tokens(self) -> int:
        return sum(r.usage.total_tokens for r in (self.compile_task, self.compile_proposer, self.test))

    @property
    def seconds(self) -> float:
        return self.compile_seconds + self.test_seconds

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "program"}
        data.update({key: getattr(self, key).to_dict() for key in ("compile_task", "compile_proposer", "test")})
        data.update(compile_seconds=round(self.compile_seconds, 3), test_seconds=round(self.test_seconds, 3),
                    details=dict(self.details))
        for key in ("mae", "rmse"):  # only the rating task has them; other files stay as they were
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MethodResult":
        values = dict(data)
        for key in ("compile_task", "compile_proposer", "test"):
            values[key] = RoleUsage.from_dict(values.get(key) or {})
        return cls(**values)


def not_run(task: UserTask, method: str, status: str, reason: str) -> MethodResult:
    """The result of a method that could not run or failed on this user."""
    return MethodResult(task.user.user_id, method, status, reason, n_train=len(task.user.train),
                        n_test=len(task.user.test))


def require_train(task: UserTask, minimum: int, what: str) -> None:
    """Raise `CannotRunError` when the user has fewer training answers than `what` needs."""
    if len(task.user.train) < minimum:
        raise CannotRunError(f"{what} needs at least {minimum} training answers; this user has "
                             f"{len(task.user.train)}")


@dataclass
class Compiled:
    """A compiled program with the LM roles its compile was counted on."""

    program: dspy.Module
    roles: Roles
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    stray_calls: int = 0


def compile_with(task: UserTask, build: Callable[[Roles], dspy.Module]) -> Compiled:
    """Run `build(roles)` with the roles' task LM as DSPy's LM, timing it and counting calls outside the roles."""
    roles, before, started = task.roles(), task.calls(), time.perf_counter()
    with dspy.context(lm=roles.task):
        program = build(roles)
    return Compiled(program, roles, time.perf_counter() - started, stray_calls=task.calls() - before - roles.calls())


def score_on_test(task: UserTask, method: str, compiled: Compiled, *, roles: Roles | None = None,
                  shared_compile: str | None = None, details: Mapping[str, Any] | None = None) -> MethodResult:
    """Score a compiled program on the user's test answers and assemble its result.

    Args:
        task: The user.
        method: The method's name.
        compiled: The program and the roles of its compile.
        roles: The roles to count the test calls on (default: the compile's; pass fresh ones when another method
            already tested with the compile's).
        shared_compile: The method whose compile is reused, if any.
        details: Method-specific facts to store.
    """
    roles = roles or compiled.roles
    compile_calls, before, started = compiled.roles.calls("task", "proposer"), task.calls(), time.perf_counter()
    test_calls = roles.calls("test")
    scored = evaluate_on_test(compiled.program, task.user.test, lm=roles.test, metric=task.spec.test_metric,
                              num_threads=task.settings.num_threads)
    test_seconds = time.perf_counter() - started
    pairs = list(zip(scored.answers, task.user.test, strict=True))
    errors: dict[str, Any] = {}
    if task.spec.is_rating:  # valid: a whole star 1-5, the student's scale; correct: within a star (aligned)
        valid = sum(predicted_rating(answer) in (1.0, 2.0, 3.0, 4.0, 5.0) for answer, _ in pairs)
        correct = sum(abs(predicted_rating(a) - e.rating) < 1.0 for a, e in pairs if predicted_rating(a) is not None)
        errors = rating_summary(task.user.test, scored.answers)
    else:
        valid = sum(option_index(answer, example.options) is not None for answer, example in pairs
                    if example.get("options"))
        correct = round(sum(scored.scores))
    details = {**(details or {}), "valid_answers": valid}
    leaked = compiled.roles.calls("task", "proposer") - compile_calls
    if leaked:  # the program kept a compile-time LM bound to a predictor: its test calls were not on the test LM
        logger.warning("User %s, %s: %d test-time call(s) went to a compile-time LM.", task.user.user_id, method,
                       leaked)
        details = {**details, "compile_lm_calls_during_test": leaked}
    stray = task.calls() - before - (roles.calls("test") - test_calls) - leaked
    return MethodResult(
        user_id=task.user.user_id,
        method=method,
        status="ok",
        accuracy=scored.accuracy,
        correct=correct,
        n_train=len(task.user.train),
        n_test=len(task.user.test),
        test_failures=scored.failures,
        compile_task=compiled.roles.usage("task"),
        compile_proposer=compiled.roles.usage("proposer"),
        test=roles.usage("test"),
        stray_calls=compiled.stray_calls + stray,
        compile_seconds=compiled.seconds,
        test_seconds=test_seconds,
        shared_compile=shared_compile,
        details={**compiled.details, **details},
        mae=errors.get("mae"),
        rmse=errors.get("rmse"),
        program=compiled.program,
    )


__all__ = ["CannotRunError", "Compiled", "MethodResult", "RoleUsage", "Roles", "UserTask", "compile_with", "not_run",
           "require_train", "score_on_test"]
