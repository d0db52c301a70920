"""Role-separated LM accounting: which role (task, proposer, test) made each LM call, with tokens and LM time.

Each method of the benchmark gets its own copies of the task and proposer LMs, each carrying a `RoleCounter` in its
instance-level callbacks. `dspy.BaseLM.copy()` keeps instance callbacks, so every copy an optimizer makes (Fermi's
budgeted and rollout copies, MIPROv2's rollout copies, GEPA's reflection wrapper, threads of DSPy's
`ParallelExecutor`) is still counted under the role of the LM it was copied from. A catch-all `StrayCallCounter`
installed in `dspy.context(callbacks=...)` counts calls from LMs that carry no role, which must be none.
"""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import dspy
from dspy.utils.callback import BaseCallback

from fermi_dspy.accounting import LMUsage

Role = Literal["task", "proposer", "test"]
ROLES: tuple[Role, ...] = ("task", "proposer", "test")
ROLE_ATTRIBUTE = "_benchmark_role"


@dataclass(frozen=True)
class RoleUsage:
    """LM usage of one role: calls (engine requests), tokens, and seconds spent inside LM calls.

    Attributes:
        usage: Calls, failed calls and tokens (`fermi_dspy.accounting.LMUsage`).
        lm_seconds: Wall seconds spent inside `LM.__call__` (summed over calls; overlapping calls add up).
    """

    usage: LMUsage = field(default_factory=LMUsage)
    lm_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.usage.to_dict(), "lm_seconds": round(self.lm_seconds, 4)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RoleUsage":
        usage = LMUsage(int(data.get("calls", 0)), int(data.get("failed_calls", 0)),
                        int(data.get("prompt_tokens", 0)), int(data.get("completion_tokens", 0)), data.get("cost"))
        return cls(usage, float(data.get("lm_seconds", 0.0)))


def _requests(outputs: Any) -> int:
    """Engine requests behind one `LM.__call__`: DSPy 3.4 fans `n=k` out into k requests, returning k outputs."""
    if isinstance(outputs, list) and len(outputs) > 1:
        return len(outputs)
    return 1


class RoleCounter(BaseCallback):
    """Counts the calls of the LMs (and their copies) that carry it, and remembers those LM objects for tokens.

    Thread-safe. Tokens and cost are summed from the histories of every LM object seen making a call; each copy has
    its own history, so nothing is counted twice.
    """

    def __init__(self, role: str) -> None:
        self.role = role
        self._lock = threading.Lock()
        self._calls = 0
        self._failed = 0
        self._lm_seconds = 0.0
        self._started: dict[str, float] = {}
        self._instances: dict[int, Any] = {}

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._lock:
            self._started[call_id] = time.perf_counter()
            self._instances.setdefault(id(instance), instance)

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        now = time.perf_counter()
        with self._lock:
            started = self._started.pop(call_id, now)
            self._lm_seconds += now - started
            self._calls += 1 if exception is not None else _requests(outputs)
            self._failed += exception is not None

    @property
    def calls(self) -> int:
        return self._calls

    def usage(self) -> RoleUsage:
        """Calls, tokens, cost and LM seconds so far."""
        with self._lock:
            calls, failed, seconds = self._calls, self._failed, self._lm_seconds
            instances = list(self._instances.values())
        prompt = completion = 0
        costs = []
        for lm in instances:
            for entry in list(getattr(lm, "history", []) or []):
                usage = entry.get("usage") or {}
                prompt += int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
                completion += int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
                if entry.get("cost") is not None:
                    costs.append(float(entry["cost"]))
        return RoleUsage(LMUsage(calls, failed, prompt, completion, sum(costs) if costs else None), seconds)


class StrayCallCounter(BaseCallback):
    """Counts LM calls made by LMs that carry no benchmark role (a leak in the accounting if ever non-zero)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.models: set[str] = set()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        if getattr(instance, ROLE_ATTRIBUTE, None) is None:
            with self._lock:
                self.calls += 1
                self.models.add(str(getattr(instance, "model", "?")))


class RoleMeter:
    """The LMs of one (user, method) run, one per role, each counted separately.

    Args:
        task_lm: The task LM the method compiles with and answers with.
        proposer_lm: The proposer LM (optimizers' prompt model / reflection LM).

    Attributes:
        task: The compile-time task LM (an LM copy carrying its counter).
        proposer: The compile-time proposer LM.
        test: The LM used to answer the held-out test questions.
    """

    def __init__(self, task_lm: dspy.BaseLM, proposer_lm: dspy.BaseLM) -> None:
        self.counters = {role: RoleCounter(role) for role in ROLES}
        self.stray = StrayCallCounter()
        self.task = self._tag(task_lm, "task")
        self.proposer = self._tag(proposer_lm, "proposer")
        self.test = self._tag(task_lm, "test")

    def _tag(self, lm: dspy.BaseLM, role: Role) -> dspy.BaseLM:
        copy = lm.copy()
        copy.callbacks = [c for c in copy.callbacks if not isinstance(c, RoleCounter)] + [self.counters[role]]
        setattr(copy, ROLE_ATTRIBUTE, role)
        return copy

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Count stray calls (from LMs without a role) made inside the block, in this thread and its workers."""
        with dspy.context(callbacks=[*dspy.settings.callbacks, self.stray]):
            yield

    def usage(self, role: Role) -> RoleUsage:
        return self.counters[role].usage()
