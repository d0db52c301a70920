"""LM-call accounting: how many calls each role made, and their tokens and cost."""

import threading
from dataclasses import asdict, dataclass
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback


@dataclass(frozen=True)
class LMUsage:
    """LM usage of one role (task or proposer) during one compile.

    Attributes:
        calls: LM calls made (cache hits included; each retry inside the LM client is not a separate call).
        failed_calls: Calls that raised after the client's retries.
        prompt_tokens: Prompt tokens reported by the provider (0 for cache hits).
        completion_tokens: Completion tokens reported by the provider.
        cost: USD cost where DSPy reports one (hosted models through LiteLLM), else None.
    """

    calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens}

    def __add__(self, other: "LMUsage") -> "LMUsage":
        cost = None if self.cost is None and other.cost is None else (self.cost or 0.0) + (other.cost or 0.0)
        return LMUsage(
            self.calls + other.calls,
            self.failed_calls + other.failed_calls,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            cost,
        )


class UsageMeter(BaseCallback):
    """Counts the LM calls made under `dspy.context(callbacks=[meter])` and sums tokens of the LMs it tracks.

    Calls are counted by callback (robust across threads and LM copies); tokens and cost are read from the
    histories of the LM copies registered with `track`, which this compile alone uses.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls = 0
        self._failed = 0
        self._lms: list[dspy.BaseLM] = []

    @property
    def calls(self) -> int:
        return self._calls

    def track(self, lm: dspy.BaseLM) -> dspy.BaseLM:
        """Register an LM copy owned by this compile, so its token usage is counted; returns it."""
        with self._lock:
            self._lms.append(lm)
        return lm

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._lock:
            self._calls += 1

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        if exception is not None:
            with self._lock:
                self._failed += 1

    def usage(self) -> LMUsage:
        """The usage so far."""
        prompt = completion = 0
        costs = []
        with self._lock:
            calls, failed, lms = self._calls, self._failed, list(self._lms)
        for lm in lms:
            for entry in list(lm.history):
                usage = entry.get("usage") or {}
                prompt += int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
                completion += int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
                if entry.get("cost") is not None:
                    costs.append(float(entry["cost"]))
        return LMUsage(calls, failed, prompt, completion, sum(costs) if costs else None)
