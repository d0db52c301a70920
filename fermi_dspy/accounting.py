"""LM-call accounting: the one LM wrapper every budget, meter and guard runs through, the usage meter, the budget.

`wrap_lm(lm, *hooks)` returns a copy of `lm` whose every call, and every call of the copies made from it (optimizers
copy LMs freely: rollouts, temperatures, threads), first runs through `hooks`. An `LMHook` may refuse a call or change
its arguments before it is sent, see how it ended, and see each reply as DSPy records it in the LM's history. The
hooks that exist:

* `CallBudget`: a hard cap on LM calls (and on USD where DSPy reports cost), checked before every call;
* `UsageMeter`: calls (engine requests), failed calls, tokens, cost, cache hits and seconds inside LM calls, optionally
  persisted call by call to a `CallLog` (a run's per-user ledger);
* `fermi_dspy.runs.guard.RunGuard`: stops a run's users, ends a user whose endpoint stays broken, seeds sampling.

Hooks run outermost first: `wrap_lm(lm, budget)` on an LM that already has a meter checks the budget before the
meter counts the call, so a refused call is never counted. `UsageMeter.track(lm)` adds the meter innermost.
"""

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import dspy
from dspy.utils.callback import BaseCallback

from fermi_dspy.errors import FermiError

CHARS_PER_TOKEN = 4


def tokens_of(chars: int) -> int:
    """Estimated tokens of `chars` characters of English text (characters / 4, rounded up)."""
    return -(-chars // CHARS_PER_TOKEN)


@dataclass(frozen=True)
class LMUsage:
    """LM usage: of one role during one compile, of one user, or of a whole run.

    Attributes:
        calls: LM calls made, as engine requests (a call with `n=3` is 3; cache hits included; each retry inside the
            LM client is not a separate call).
        failed_calls: Calls that raised after the client's retries.
        prompt_tokens: Prompt tokens reported by the provider (cache hits not included).
        completion_tokens: Completion tokens reported by the provider.
        cost: USD cost where DSPy reports one (hosted models through LiteLLM), else None.
        cache_hits: Replies served from DSPy's cache.
        cached_prompt_tokens: Prompt tokens the cache hits would have cost (estimated from the text when DSPy drops
            their usage).
        cached_completion_tokens: Completion tokens the cache hits would have cost.
    """

    calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    cache_hits: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cached_tokens(self) -> int:
        return self.cached_prompt_tokens + self.cached_completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_tokens": self.total_tokens, "cached_tokens": self.cached_tokens}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "LMUsage":
        """The usage in a dict written by `to_dict` (missing counts are 0; other keys are ignored)."""
        data = data or {}
        values: dict[str, Any] = {f.name: int(data.get(f.name) or 0) for f in fields(cls) if f.name != "cost"}
        return cls(**values, cost=None if data.get("cost") is None else float(data["cost"]))

    def __add__(self, other: "LMUsage") -> "LMUsage":
        cost = None if self.cost is None and other.cost is None else (self.cost or 0.0) + (other.cost or 0.0)
        values = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self) if f.name != "cost"}
        return LMUsage(**values, cost=cost)

    def at_least(self, other: "LMUsage") -> "LMUsage":
        """Field by field, the larger of the two (two records of the same spending, one possibly incomplete)."""
        values = {f.name: max(getattr(self, f.name), getattr(other, f.name)) for f in fields(self) if f.name != "cost"}
        costs = [c for c in (self.cost, other.cost) if c is not None]
        return LMUsage(**values, cost=max(costs) if costs else None)


class BudgetExhaustedError(FermiError, RuntimeError):
    """Raised instead of making an LM call that the compile's budget does not allow."""


class LMHook:
    """What every call of a wrapped LM runs through (see `wrap_lm`). Override the methods you need.

    Hooks are shared by every copy of the wrapped LM and called from many threads at once: keep them thread-safe.
    """

    def before_call(self, lm: dspy.BaseLM, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Called before the call is sent, with its arguments; return them (changed or not), or raise to refuse it."""
        return kwargs

    def after_call(self, lm: dspy.BaseLM, seconds: float, error: Exception | None) -> None:
        """Called when the call returned (`error` None) or raised `error`; raise another exception to replace it."""

    def on_reply(self, lm: dspy.BaseLM, entry: Mapping[str, Any]) -> None:
        """Called with the history entry DSPy records for the call (usage, cost, response, messages, outputs)."""


def requests_of(lm: dspy.BaseLM, kwargs: Mapping[str, Any]) -> int:
    """Engine requests one call makes: DSPy fans `n=k` out into k requests."""
    n = kwargs.get("n", (getattr(lm, "kwargs", None) or {}).get("n"))
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


_WRAPPED: dict[type, type] = {}
_WRAPPED_LOCK = threading.Lock()


def _run_hooks(lm: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple[LMHook, ...], dict[str, Any], float]:
    hooks = lm._fermi_hooks
    for hook in hooks:
        kwargs = hook.before_call(lm, args, kwargs)
    return hooks, kwargs, time.perf_counter()


def _end_hooks(lm: Any, hooks: tuple[LMHook, ...], started: float, error: Exception | None) -> None:
    seconds = time.perf_counter() - started
    for hook in reversed(hooks):
        hook.after_call(lm, seconds, error)


def _wrapped_class(cls: type) -> type:
    if cls.__dict__.get("_fermi_wrapped"):
        return cls
    with _WRAPPED_LOCK:
        if cls in _WRAPPED:
            return _WRAPPED[cls]

        def __call__(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N807
            hooks, kwargs, started = _run_hooks(self, args, kwargs)
            try:
                result = cls.__call__(self, *args, **kwargs)
            except Exception as exc:
                _end_hooks(self, hooks, started, exc)
                raise
            _end_hooks(self, hooks, started, None)
            return result

        async def acall(self, *args: Any, **kwargs: Any) -> Any:
            hooks, kwargs, started = _run_hooks(self, args, kwargs)
            try:
                result = await cls.acall(self, *args, **kwargs)
            except Exception as exc:
                _end_hooks(self, hooks, started, exc)
                raise
            _end_hooks(self, hooks, started, None)
            return result

        def update_history(self, entry: Any) -> None:
            if isinstance(entry, Mapping):
                for hook in self._fermi_hooks:
                    hook.on_reply(self, entry)
            cls.update_history(self, entry)

        _WRAPPED[cls] = type(cls.__name__, (cls,), {"__call__": __call__, "acall": acall, "update_history":
                                                    update_history, "_fermi_wrapped": True,
                                                    "__module__": cls.__module__, "__qualname__": cls.__qualname__})
        return _WRAPPED[cls]


def hooks_of(lm: Any) -> tuple[LMHook, ...]:
    """The hooks a (wrapped) LM's calls run through, outermost first."""
    return tuple(getattr(lm, "_fermi_hooks", ()))


def _install(lm: dspy.BaseLM, hooks: tuple[LMHook, ...], *, inner: bool) -> None:
    lm._fermi_hooks = (*hooks_of(lm), *hooks) if inner else (*hooks, *hooks_of(lm))
    lm.__class__ = _wrapped_class(type(lm))


def wrap_lm(lm: dspy.BaseLM, *hooks: LMHook, inner: bool = False, role: str | None = None) -> dspy.BaseLM:
    """A copy of `lm` whose every call, and every call of the copies made from it, runs through `hooks`.

    Args:
        lm: The LM (possibly wrapped already; its hooks are kept).
        *hooks: The hooks to add.
        inner: Run them after the hooks `lm` already has (default: before them, as an outer wrapper would).
        role: A name for the LM's role ("task", "proposer"), kept on the copy as `_fermi_role`.

    Example:
        ```python
        budget, meter = CallBudget(max_calls=100), UsageMeter()
        lm = wrap_lm(dspy.LM("openai/gpt-4o-mini"), budget, meter)
        ```
    """
    wrapped = lm.copy()
    _install(wrapped, hooks, inner=inner)
    if role is not None:
        wrapped._fermi_role = role
    return wrapped


class CallLog(Protocol):
    """Where a `UsageMeter` persists each call as it happens (a run's per-user ledger, `fermi_dspy.runs.ledger`)."""

    def call(self, requests: int = 1) -> None: ...

    def failed(self) -> None: ...

    def reply(self, prompt_tokens: int, completion_tokens: int, cost: float | None, cache_hit: bool) -> None: ...


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


class UsageMeter(LMHook, BaseCallback):
    """Counts the LM calls of the LMs it is a hook of: requests, failures, tokens, cost, cache hits, LM seconds.

    A call is counted before it is sent (and written to `log` at once, if given), so a call that never returns is
    still counted. Tokens and cost are counted from each reply as DSPy records it. A reply served from DSPy's cache
    is a cache hit: it is a call, its tokens are counted apart (estimated from its text when DSPy drops its usage) and
    it costs nothing again.

    Put it on an LM with `wrap_lm(lm, meter)` or, in place, `meter.track(lm)`. As a DSPy callback
    (`dspy.context(callbacks=[meter])`) it also counts the calls of LMs it is not a hook of (no tokens for those).

    Args:
        log: Where each call is persisted as it happens (None: counted in memory only).
    """

    def __init__(self, log: CallLog | None = None) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._counts = dict.fromkeys((f.name for f in fields(LMUsage) if f.name != "cost"), 0)
        self._cost: float | None = None
        self._seconds = 0.0
        self._untracked: set[str] = set()

    def _add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                self._counts[name] += value

    @property
    def calls(self) -> int:
        return self._counts["calls"]

    @property
    def lm_seconds(self) -> float:
        """Seconds spent inside the calls (summed over calls; calls in parallel add up)."""
        return self._seconds

    def usage(self) -> LMUsage:
        """The usage so far."""
        with self._lock:
            return LMUsage(**self._counts, cost=self._cost)

    def track(self, lm: dspy.BaseLM) -> dspy.BaseLM:
        """Count `lm`'s calls (and those of its later copies) in this meter, innermost of its hooks; returns `lm`."""
        if self not in hooks_of(lm):
            _install(lm, (self,), inner=True)
        return lm

    # -- as a hook ------------------------------------------------------------------------------------------------

    def before_call(self, lm: dspy.BaseLM, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        requests = requests_of(lm, kwargs)
        self._add(calls=requests)
        if self.log is not None:
            self.log.call(requests)
        return kwargs

    def after_call(self, lm: dspy.BaseLM, seconds: float, error: Exception | None) -> None:
        with self._lock:
            self._seconds += seconds
        if error is not None:
            self._add(failed_calls=1)
            if self.log is not None:
                self.log.failed()

    def on_reply(self, lm: dspy.BaseLM, entry: Mapping[str, Any]) -> None:
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
        if cache_hit:
            self._add(cache_hits=1, cached_prompt_tokens=prompt, cached_completion_tokens=completion)
        else:
            self._add(prompt_tokens=prompt, completion_tokens=completion)
        if cost is not None:
            with self._lock:
                self._cost = (self._cost or 0.0) + cost
        if self.log is not None:
            self.log.reply(prompt, completion, cost, cache_hit)

    # -- as a DSPy callback: calls of LMs this meter is not a hook of ---------------------------------------------

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        if self not in hooks_of(instance):
            with self._lock:
                self._untracked.add(call_id)
            self._add(calls=requests_of(instance, inputs))

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        with self._lock:
            untracked = call_id in self._untracked
            self._untracked.discard(call_id)
        if untracked and exception is not None:
            self._add(failed_calls=1)


class CallBudget(LMHook):
    """A hard cap on LM calls (and on USD cost where DSPy reports it), checked before every single call.

    Args:
        max_calls: Most LM calls allowed (engine requests); None is no cap.
        max_cost: Most USD allowed; None is no cap. Checked against `cost_so_far()` before each call, so the call
            that crosses the cap is the last one made.
        cost_so_far: Returns the USD spent so far (None when the provider reports no cost).
    """

    def __init__(self, max_calls: int | None = None, max_cost: float | None = None,
                 cost_so_far: Callable[[], float | None] | None = None) -> None:
        self.max_calls = max_calls
        self.max_cost = max_cost
        self.cost_so_far = cost_so_far
        self.used = 0
        self.exhausted = False
        self._lock = threading.Lock()

    def fits(self, calls: int) -> bool:
        """Whether `calls` more calls fit in the call cap."""
        return self.max_calls is None or self.used + calls <= self.max_calls

    def acquire(self, calls: int = 1) -> None:
        """Take `calls` calls from the budget.

        Raises:
            BudgetExhaustedError: The call cap or the cost cap is reached; the call must not be made.
        """
        with self._lock:
            if self.max_calls is not None and self.used + calls > self.max_calls:
                self.exhausted = True
                raise BudgetExhaustedError(f"the LM-call budget of {self.max_calls} calls is spent")
            if self.max_cost is not None and self.cost_so_far is not None:
                cost = self.cost_so_far()
                if cost is not None and cost >= self.max_cost:
                    self.exhausted = True
                    raise BudgetExhaustedError(f"the cost budget of ${self.max_cost:.4f} is spent (${cost:.4f})")
            self.used += calls

    def before_call(self, lm: dspy.BaseLM, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.acquire(requests_of(lm, kwargs))
        return kwargs


def with_budget(lm: dspy.BaseLM, budget: CallBudget) -> dspy.BaseLM:
    """A copy of `lm` whose every call (adapter retries and `lm.copy()`s included) first takes one from `budget`."""
    return wrap_lm(lm, budget)


__all__ = ["BudgetExhaustedError", "CallBudget", "CallLog", "LMHook", "LMUsage", "UsageMeter", "tokens_of",
           "with_budget", "wrap_lm"]
