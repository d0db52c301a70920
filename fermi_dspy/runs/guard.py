"""The guard every user's LMs run behind in a run: a hook of the one LM wrapper (`fermi_dspy.accounting.wrap_lm`),
next to the user's `UsageMeter`, which counts the user's calls and writes each to the user's call ledger
(`fermi_dspy.runs.ledger`) before it is sent, so the calls of an attempt that is killed are still charged on resume.

* Replies: `ReplyParses` counts, per role, the replies DSPy's adapters could parse and those they could not, so a
  user whose task LM never gave a usable reply is flagged instead of finishing with scores of 0.
* Fail fast: a call that still raises a transient error (timeout, connection error, HTTP 429, 5xx) or an
  authentication/billing error after the LM client's own retries raises `UserAbortError`, which ends the user's work
  (Fermi would otherwise score the example 0 and go on, finishing the user with corrupted scores).
* Stop: when the run stops (`request_stop`), the next call of every running user raises `RunInterruptedError`.
* Seeds: engines that take a per-call `seed` (the local llama.cpp engine) draw it from an engine-wide generator, so
  with several users sharing one engine a user's samples would depend on the other users' calls. For such engines a
  sampled call (temperature > 0) without a seed gets one derived from its rollout id and messages, which makes each
  user's samples independent of scheduling, worker count and engine.
"""

import hashlib
import json
import threading
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback
from dspy.utils.exceptions import (
    LMAuthError,
    LMBillingError,
    LMLockTimeoutError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
)

from fermi_dspy.accounting import LMHook, UsageMeter, wrap_lm
from fermi_dspy.runs.errors import RunInterruptedError, UserAbortError
from fermi_dspy.runs.redact import redact

#: LM errors that end a user's work when they survive the LM client's retries.
ABORTING_ERRORS: tuple[type[Exception], ...] = (
    LMRateLimitError, LMTimeoutError, LMServerError, LMTransportError, LMLockTimeoutError, LMAuthError, LMBillingError,
)

_STOP = threading.Event()


def request_stop() -> None:
    """Make the next LM call of every user running in this process raise `RunInterruptedError`."""
    _STOP.set()


def clear_stop() -> None:
    """Allow LM calls again (after a stopped run has wound down)."""
    _STOP.clear()


class ReplyParses(BaseCallback):
    """Counts, per role ("task", "proposer"), the LM replies DSPy's adapters parsed and those they could not.

    A reply that one adapter cannot parse and a fallback adapter then asks again for counts once as unparseable; the
    fallback's own reply is counted on its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, dict[str, int]] = {}

    def on_adapter_parse_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        role = getattr(dspy.settings.lm, "_fermi_role", None) or "other"
        with self._lock:
            counts = self.counts.setdefault(role, {"parsed": 0, "unparseable": 0})
            counts["unparseable" if exception is not None else "parsed"] += 1

    def to_dict(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {role: dict(counts) for role, counts in self.counts.items()}

    def never_parsed(self, role: str = "task") -> bool:
        """Whether the role's LM replied at least once and no reply of it could be parsed."""
        with self._lock:
            counts = self.counts.get(role, {})
            return counts.get("parsed", 0) == 0 and counts.get("unparseable", 0) > 0


def takes_seed(lm: dspy.BaseLM) -> bool:
    """Whether the LM's engine is an object that accepts a per-call `seed` (local engines, scripted test engines)."""
    engine = getattr(lm, "_engine_spec", None)
    return not isinstance(engine, str | type(None)) and "seed" in getattr(engine, "supported_params", ())


def derived_seed(rollout_id: Any, args: tuple, kwargs: dict[str, Any]) -> int:
    """A seed that depends only on the call: its rollout id, prompt and messages."""
    material = json.dumps([rollout_id, args, kwargs.get("prompt"), kwargs.get("messages")], default=str,
                          sort_keys=True)
    return int.from_bytes(hashlib.sha256(material.encode()).digest()[:4], "big") >> 1


class RunGuard(LMHook):
    """Stops calls when the run stops, seeds sampled calls of seed-taking engines, ends the user on a broken endpoint.

    Args:
        seeds: Derive a seed for sampled calls without one (see the module docstring).
    """

    def __init__(self, seeds: bool) -> None:
        self.seeds = seeds

    def before_call(self, lm: dspy.BaseLM, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        if _STOP.is_set():
            raise RunInterruptedError("the run is stopping")
        if self.seeds and kwargs.get("seed") is None and lm.kwargs.get("seed") is None:
            if kwargs.get("temperature", lm.kwargs.get("temperature")):
                kwargs = {**kwargs, "seed": derived_seed(lm.kwargs.get("rollout_id"), args, kwargs)}
        return kwargs

    def after_call(self, lm: dspy.BaseLM, seconds: float, error: Exception | None) -> None:
        if isinstance(error, ABORTING_ERRORS):
            raise UserAbortError(redact(f"{type(error).__name__}: {error}"), type(error).__name__) from error


def guard_lm(lm: dspy.BaseLM, usage: UsageMeter, role: str | None = None) -> dspy.BaseLM:
    """A copy of `lm` whose calls (and those of every copy made from it) are guarded and counted in `usage`.

    Args:
        lm: The LM to guard.
        usage: The user's meter, shared by all its LMs.
        role: "task" or "proposer", for counting parsed replies per role (`ReplyParses`).
    """
    return wrap_lm(lm, RunGuard(takes_seed(lm)), usage, role=role)
