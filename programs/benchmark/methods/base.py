"""What every method gets (`UserTask`) and returns (`MethodResult`), and the shared compile-then-test steps."""

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dspy

from fermi_dspy.data import UserSplit
from fermi_dspy.metrics import option_index
from programs.benchmark.roles import RoleMeter, RoleUsage
from programs.benchmark.settings import BenchmarkSettings
from programs.evaluation import evaluate_on_test

logger = logging.getLogger(__name__)

STATUSES = ("ok", "cannot_run", "failed")


class CannotRunError(Exception):
    """A method cannot run on this user (e.g. too few training answers for its minimum); reported, not dropped."""


@dataclass(frozen=True)
class UserTask:
    """One user's split and the LMs and settings every method of the run uses.

    Attributes:
        split: The user's train/test split (the same for every method).
        settings: The run's settings.
        task_lm: The task LM (each method counts its own copies).
        proposer_lm: The proposer LM.
        student: Builds a fresh student program.
    """

    split: UserSplit
    settings: BenchmarkSettings
    task_lm: dspy.BaseLM
    proposer_lm: dspy.BaseLM
    student: Callable[[], dspy.Module]

    def meter(self) -> RoleMeter:
        """Fresh role-tagged copies of the LMs for one method."""
        return RoleMeter(self.task_lm, self.proposer_lm)


@dataclass(frozen=True)
class MethodResult:
    """One method on one user: accuracy on the user's test answers and what it cost.

    Holds only ids, scores and counts: never a profile, an answer or a learned prompt (Pew's terms forbid publishing
    a respondent's profile together with answers, and prompts may quote both).

    Attributes:
        user_id: The user.
        method: The method's name.
        status: "ok", "cannot_run" (e.g. too few training answers; `reason` says why) or "failed" (an error).
        reason: Why the method did not run, or the error.
        accuracy: Share of the user's test answers matched (None unless ok).
        correct: Test answers matched.
        n_train: Training answers available.
        n_test: Test answers scored.
        test_failures: Test questions whose LM call failed (scored wrong).
        compile_task: Task-LM usage while compiling.
        compile_proposer: Proposer-LM usage while compiling.
        test: LM usage while answering the test questions.
        stray_calls: LM calls by LMs without a role (0 unless the accounting leaks).
        compile_seconds: Wall time of the compile (0 for methods without one).
        test_seconds: Wall time of answering the test questions.
        shared_compile: The method whose compile this one reuses (its costs are repeated here), if any.
        details: Method-specific facts (stop reason, candidates scored, ...), never text from the user.
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
        return (self.compile_task.usage.total_tokens + self.compile_proposer.usage.total_tokens
                + self.test.usage.total_tokens)

    @property
    def seconds(self) -> float:
        return self.compile_seconds + self.test_seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id, "method": self.method, "status": self.status, "reason": self.reason,
            "accuracy": self.accuracy, "correct": self.correct, "n_train": self.n_train, "n_test": self.n_test,
            "test_failures": self.test_failures, "compile_task": self.compile_task.to_dict(),
            "compile_proposer": self.compile_proposer.to_dict(), "test": self.test.to_dict(),
            "stray_calls": self.stray_calls, "compile_seconds": round(self.compile_seconds, 3),
            "test_seconds": round(self.test_seconds, 3), "shared_compile": self.shared_compile,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MethodResult":
        values = dict(data)
        for key in ("compile_task", "compile_proposer", "test"):
            values[key] = RoleUsage.from_dict(values.get(key) or {})
        return cls(**values)


def not_run(task: UserTask, method: str, status: str, reason: str) -> MethodResult:
    """The result of a method that could not run or failed on this user."""
    return MethodResult(task.split.user_id, method, status, reason, n_train=len(task.split.train),
                        n_test=len(task.split.test))


def require_train(task: UserTask, minimum: int, what: str) -> None:
    """Raise `CannotRunError` when the user has fewer training answers than `what` needs."""
    if len(task.split.train) < minimum:
        raise CannotRunError(f"{what} needs at least {minimum} training answers; this user has "
                             f"{len(task.split.train)}")


@dataclass
class Compiled:
    """A compiled program with the meter its compile was counted on."""

    program: dspy.Module
    meter: RoleMeter
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def compile_with(task: UserTask, build: Callable[[RoleMeter], dspy.Module]) -> Compiled:
    """Run `build(meter)` with the meter's task LM as DSPy's LM, timing it and watching for stray LM calls."""
    meter = task.meter()
    started = time.perf_counter()
    with meter.watching(), dspy.context(lm=meter.task):
        program = build(meter)
    return Compiled(program, meter, time.perf_counter() - started)


def score_on_test(task: UserTask, method: str, compiled: Compiled, *, meter: RoleMeter | None = None,
                shared_compile: str | None = None, details: Mapping[str, Any] | None = None) -> MethodResult:
    """Score a compiled program on the user's test answers and assemble its result.

    Args:
        task: The user.
        method: The method's name.
        compiled: The program and the meter of its compile.
        meter: The meter to count the test calls on (default: the compile's; pass a fresh one when another method
            already tested with the compile's meter).
        shared_compile: The method whose compile is reused, if any.
        details: Method-specific facts to store.
    """
    meter = meter or compiled.meter
    compile_calls = compiled.meter.counters["task"].calls + compiled.meter.counters["proposer"].calls
    started = time.perf_counter()
    with meter.watching():
        scored = evaluate_on_test(compiled.program, task.split.test, lm=meter.test,
                                  num_threads=task.settings.num_threads)
    test_seconds = time.perf_counter() - started
    valid = sum(option_index(answer, example.options) is not None
                for answer, example in zip(scored.answers, task.split.test, strict=True) if example.get("options"))
    details = {**(details or {}), "valid_answers": valid}
    leaked = compiled.meter.counters["task"].calls + compiled.meter.counters["proposer"].calls - compile_calls
    if leaked:  # the program kept a compile-time LM bound to a predictor: its test calls were not on the test LM
        logger.warning("User %s, %s: %d test-time call(s) went to a compile-time LM.", task.split.user_id, method,
                       leaked)
        details = {**details, "compile_lm_calls_during_test": leaked}
    return MethodResult(
        user_id=task.split.user_id,
        method=method,
        status="ok",
        accuracy=scored.accuracy,
        correct=round(sum(scored.scores)),
        n_train=len(task.split.train),
        n_test=len(task.split.test),
        test_failures=scored.failures,
        compile_task=compiled.meter.usage("task"),
        compile_proposer=compiled.meter.usage("proposer"),
        test=meter.usage("test"),
        stray_calls=compiled.meter.stray.calls + (meter.stray.calls if meter is not compiled.meter else 0),
        compile_seconds=compiled.seconds,
        test_seconds=test_seconds,
        shared_compile=shared_compile,
        details={**compiled.details, **details},
    )
