"""The LM guard every user's LMs run behind: it counts the user's calls, fails the user fast when the LM endpoint
stays broken after DSPy's retries, stops work when the run stops, and seeds local sampling per call.

* Counting: every call through any copy of a user's LMs is counted in that user's `UserLMUsage` (copies made by
  Fermi are tracked too, so their token usage and cost are summed).
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
from dspy.utils.exceptions import (
    LMAuthError,
    LMBillingError,
    LMLockTimeoutError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
)

from fermi_dspy.accounting import LMUsage, usage_from_histories
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


class UserLMUsage:
    """One user's LM use, shared by every copy of that user's guarded LMs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.failed_calls = 0
        self._lms: list[dspy.BaseLM] = []

    def track(self, lm: dspy.BaseLM) -> None:
        with self._lock:
            self._lms.append(lm)

    def _count(self, failed: bool = False) -> None:
        with self._lock:
            if failed:
                self.failed_calls += 1
            else:
                self.calls += 1

    def usage(self) -> LMUsage:
        """Calls (failed ones included), tokens and cost so far."""
        with self._lock:
            calls, failed, lms = self.calls, self.failed_calls, list(self._lms)
        return usage_from_histories(lms, calls=calls, failed_calls=failed)


def takes_seed(lm: dspy.BaseLM) -> bool:
    """Whether the LM's engine is an object that accepts a per-call `seed` (local engines, scripted test engines)."""
    engine = getattr(lm, "_engine_spec", None)
    return not isinstance(engine, str | type(None)) and "seed" in getattr(engine, "supported_params", ())


def derived_seed(rollout_id: Any, args: tuple, kwargs: dict[str, Any]) -> int:
    """A seed that depends only on the call: its rollout id, prompt and messages."""
    material = json.dumps([rollout_id, args, kwargs.get("prompt"), kwargs.get("messages")], default=str,
                          sort_keys=True)
    return int.from_bytes(hashlib.sha256(material.encode()).digest()[:4], "big") >> 1


_GUARDED: dict[type, type] = {}
_GUARDED_LOCK = threading.Lock()


def _guarded_class(cls: type) -> type:
    with _GUARDED_LOCK:
        if cls in _GUARDED:
            return _GUARDED[cls]

        def prepare(self: Any, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
            if _STOP.is_set():
                raise RunInterruptedError("the run is stopping")
            if self._fermi_runs_seeds and kwargs.get("seed") is None and self.kwargs.get("seed") is None:
                temperature = kwargs.get("temperature", self.kwargs.get("temperature"))
                if temperature:
                    kwargs = {**kwargs, "seed": derived_seed(self.kwargs.get("rollout_id"), args, kwargs)}
            self._fermi_runs_usage._count()
            return kwargs

        def failed(self: Any, exc: Exception) -> None:
            self._fermi_runs_usage._count(failed=True)
            if isinstance(exc, ABORTING_ERRORS):
                raise UserAbortError(redact(f"{type(exc).__name__}: {exc}"), type(exc).__name__) from exc

        def __call__(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N807
            kwargs = prepare(self, args, kwargs)
            try:
                return cls.__call__(self, *args, **kwargs)
            except Exception as exc:
                failed(self, exc)
                raise

        async def acall(self, *args: Any, **kwargs: Any) -> Any:
            kwargs = prepare(self, args, kwargs)
            try:
                return await cls.acall(self, *args, **kwargs)
            except Exception as exc:
                failed(self, exc)
                raise

        def copy(self, **kwargs: Any) -> Any:
            new = cls.copy(self, **kwargs)
            self._fermi_runs_usage.track(new)
            return new

        _GUARDED[cls] = type(f"RunGuarded{cls.__name__}", (cls,), {"__call__": __call__, "acall": acall,
                                                                    "copy": copy})
        return _GUARDED[cls]


def guard_lm(lm: dspy.BaseLM, usage: UserLMUsage) -> dspy.BaseLM:
    """A copy of `lm` whose calls (and those of every copy made from it) are guarded and counted in `usage`."""
    guarded = lm.copy()
    guarded.__class__ = _guarded_class(type(lm))
    guarded._fermi_runs_usage = usage
    guarded._fermi_runs_seeds = takes_seed(lm)
    usage.track(guarded)
    return guarded
