"""The LM guard every user's LMs run behind: it counts the user's calls, fails the user fast when the LM endpoint
stays broken after DSPy's retries, stops work when the run stops, and seeds local sampling per call.

* Counting: every call through any copy of a user's LMs is counted in that user's `UserLMUsage` before it is sent,
  and written to the user's call ledger (`fermi_dspy.runs.ledger`) at once, so the calls of an attempt that is
  killed are still charged on resume. Each reply's tokens and cost are counted as DSPy records it. A reply served
  from DSPy's cache is counted as a cache hit; DSPy drops its usage, so the tokens it would have cost are estimated
  from its text (characters / 4, as the run's estimate does) and reported apart (it costs nothing again).
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
from collections.abc import Mapping
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

from fermi_dspy.accounting import LMUsage
from fermi_dspy.runs.errors import RunInterruptedError, UserAbortError
from fermi_dspy.runs.estimate import tokens_of
from fermi_dspy.runs.ledger import CallLedger
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


def _tokens(usage: Any) -> tuple[int, int]:
    """(prompt, completion) tokens of a usage record: a dict or an object, OpenAI or lm15 field names."""
    if usage is None:
        return 0, 0

    def field(*names: str) -> int:
        for name in names:
            value = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
            if isinstance(value, int | float) and not isinstance(value, bool) and value:
                return int(value)
        return 0

    return field("prompt_tokens", "input_tokens"), field("completion_tokens", "output_tokens")


def _text_chars(value: Any) -> int:
    """Characters of text in a prompt, message list or output list (for estimating a cache hit's tokens)."""
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_text_chars(value.get(key)) for key in ("content", "text"))
    if isinstance(value, list | tuple):
        return sum(_text_chars(item) for item in value)
    return len(str(getattr(value, "text", "") or ""))


class UserLMUsage:
    """One user's LM use, shared by every copy of that user's guarded LMs.

    Args:
        ledger: Where each call is persisted as it happens (None: counted in memory only).
    """

    def __init__(self, ledger: CallLedger | None = None) -> None:
        self._lock = threading.Lock()
        self.ledger = ledger
        self.calls = 0
        self.failed_calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost: float | None = None
        self.cache_hits = 0
        self.cached_prompt_tokens = 0
        self.cached_completion_tokens = 0

    def _count(self, failed: bool = False) -> None:
        with self._lock:
            if failed:
                self.failed_calls += 1
            else:
                self.calls += 1
        if self.ledger is not None and failed:
            self.ledger.failed()
        elif self.ledger is not None:
            self.ledger.call()

    def _reply(self, entry: Mapping[str, Any]) -> None:
        """Count one reply as DSPy records it in the LM's history."""
        prompt, completion = _tokens(entry.get("usage"))
        response = entry.get("response")
        cache_hit = bool(getattr(response, "cache_hit", False))
        if not prompt and not completion and not cache_hit:  # a native cache hit keeps usage on its response only
            prompt, completion = _tokens(getattr(response, "usage", None))
            cache_hit = bool(prompt or completion)
        if cache_hit and not prompt and not completion:  # DSPy dropped the usage: estimate it from the text
            prompt = tokens_of(_text_chars(entry.get("messages")) + _text_chars(entry.get("prompt")))
            completion = tokens_of(_text_chars(entry.get("outputs")))
        cost = None if cache_hit or entry.get("cost") is None else float(entry["cost"])
        with self._lock:
            if cache_hit:
                self.cache_hits += 1
                self.cached_prompt_tokens += prompt
                self.cached_completion_tokens += completion
            else:
                self.prompt_tokens += prompt
                self.completion_tokens += completion
            if cost is not None:
                self.cost = (self.cost or 0.0) + cost
        if self.ledger is not None:
            self.ledger.reply(prompt, completion, cost, cache_hit)

    def usage(self) -> LMUsage:
        """Calls (failed ones included), tokens and cost so far (cache hits: calls, no tokens or cost)."""
        with self._lock:
            return LMUsage(self.calls, self.failed_calls, self.prompt_tokens, self.completion_tokens, self.cost)

    def cache(self) -> dict[str, int]:
        """Replies served from DSPy's cache and the tokens they would have cost."""
        with self._lock:
            return {"cache_hits": self.cache_hits, "cached_prompt_tokens": self.cached_prompt_tokens,
                    "cached_completion_tokens": self.cached_completion_tokens,
                    "cached_tokens": self.cached_prompt_tokens + self.cached_completion_tokens}

    def usage_dict(self) -> dict[str, Any]:
        """`usage()` as a dict, with the cache counts."""
        return {**self.usage().to_dict(), **self.cache()}


class ReplyParses(BaseCallback):
    """Counts, per role ("task", "proposer"), the LM replies DSPy's adapters parsed and those they could not.

    A reply that one adapter cannot parse and a fallback adapter then asks again for counts once as unparseable; the
    fallback's own reply is counted on its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, dict[str, int]] = {}

    def on_adapter_parse_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        role = getattr(dspy.settings.lm, "_fermi_runs_role", None) or "other"
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

        def update_history(self, entry: Any) -> None:
            if isinstance(entry, Mapping):
                self._fermi_runs_usage._reply(entry)
            cls.update_history(self, entry)

        _GUARDED[cls] = type(f"RunGuarded{cls.__name__}", (cls,), {"__call__": __call__, "acall": acall,
                                                                    "update_history": update_history})
        return _GUARDED[cls]


def guard_lm(lm: dspy.BaseLM, usage: UserLMUsage, role: str | None = None) -> dspy.BaseLM:
    """A copy of `lm` whose calls (and those of every copy made from it) are guarded and counted in `usage`.

    Args:
        lm: The LM to guard.
        usage: The user's usage, shared by all its LMs.
        role: "task" or "proposer", for counting parsed replies per role (`ReplyParses`).
    """
    guarded = lm.copy()
    guarded.__class__ = _guarded_class(type(lm))
    guarded._fermi_runs_usage = usage
    guarded._fermi_runs_seeds = takes_seed(lm)
    guarded._fermi_runs_role = role
    return guarded
