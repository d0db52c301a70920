"""In-process local LM: a DSPy 3.4 engine around ``llama_cpp.Llama``.

:class:`LlamaCppEngine` implements DSPy's engine contract (``complete(Request) -> Response``, ``stream``, ``close``),
so ``dspy.LM("local/<name>", engine=LlamaCppEngine(path))`` gets DSPy's cache, retries, history, callbacks and usage
tracking for free. Every structured call is constrained so that small models always produce output the adapter can
parse: the JSON schema sent by :class:`dspy.JSONAdapter`, or the ``[[ ## field ## ]]`` sections requested by the
default :class:`dspy.ChatAdapter` (see :mod:`fermi_dspy.lm.grammar`).

How a ChatAdapter request is answered (the prompt is rendered with the model's own chat template, and the first
``[[ ## field ## ]]`` header is appended to it, so it is evaluated with the prompt instead of being generated):

* **One choice field** (a ``Literal[...]`` output whose values are single tokens, e.g. the option letters of a
  multiple-choice question): the prompt is evaluated once and the answer is the allowed value with the highest
  probability at the next position (sampled among the allowed values when the temperature is above 0). Nothing is
  generated, and the values' log-probabilities come for free: with ``logprobs`` requested, the reply carries the
  allowed values and their log-probabilities under the model (before the constraint), best first.
* **One ``str`` field**: generated without a grammar until its blank line (or ``[[``).
* Anything else (numbers, several fields, JSON, long choices): generated under a grammar built from the signature.

**KV slots.** llama.cpp reuses the KV cache of the longest common token prefix of consecutive calls. One context
holds one prefix, so calls that alternate between prompt families (the proposer's meta-prompt and the task's prompt,
or several personalized prompts) would re-evaluate their whole prefix at every switch. The engine therefore keeps up
to ``slots`` contexts over the same memory-mapped weights (about 130 MB each for a 0.5B model at ``n_ctx=4096``) and
sends each request to the context that already holds its prefix: a context is reused only when the request keeps
all of that context's stable prefix (everything before its last message), else a new context is opened, or the least
recently used one is given up. Usage reports ``cache_read_tokens`` (the prompt tokens reused from a context), so
``prompt_tokens - cached_tokens`` in DSPy's history is what was really evaluated.

The ``Llama`` objects are not thread-safe (concurrent calls segfault), and two of them running at once would
oversubscribe the cores, so all calls are serialized by one lock; DSPy's threaded ``Evaluate`` still works, one call
at a time.

Threads: llama.cpp's worker threads spin while they wait. If processes running models at the same time together use
more threads than there are cores, every call becomes ~30x slower (measured: 37 s instead of 1.2 s per call). Give
each concurrent process ``n_threads = cores // processes``.
"""

import contextlib
import functools
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from dspy.lm15 import (
    ContextLengthError,
    InvalidRequestError,
    Message,
    Request,
    Response,
    TextPart,
    TokenLogprob,
    TopLogprob,
    UnsupportedFeatureError,
    Usage,
)

from fermi_dspy.lm.errors import INSTALL_LOCAL_COMMAND, EngineNotInstalledError
from fermi_dspy.lm.grammar import (
    COMPLETED_MARKER,
    TEXT_MODES,
    OutputField,
    chat_adapter_fields,
    chat_adapter_gbnf,
    chat_adapter_header,
    is_plain_text,
    json_schema_of,
    literal_choices,
    without_format_reminder,
)
from fermi_dspy.repetition import LOOP_WORDS, loop_start

logger = logging.getLogger(__name__)

_UNSET = object()

#: Generation settings the engine honours (DSPy's JSONAdapter checks for ``response_format``).
SUPPORTED_PARAMS = frozenset(
    {"temperature", "max_tokens", "top_p", "top_k", "stop", "seed", "response_format", "frequency_penalty",
     "presence_penalty", "logprobs", "top_logprobs"}
)


def import_llama_cpp() -> Any:
    """Import ``llama_cpp``, or raise a clear error with the install command.

    Raises:
        EngineNotInstalledError: llama-cpp-python is not installed (or its native library failed to load).
    """
    try:
        import llama_cpp
    except ImportError as exc:
        raise EngineNotInstalledError(
            f"The local LM engine needs llama-cpp-python, which is not importable ({exc}). Install it with "
            f"`{INSTALL_LOCAL_COMMAND}` (it compiles llama.cpp: about 4-6 minutes on 2 cores), or use a hosted or "
            "served model instead, e.g. --lm openai/gpt-4o-mini or --lm openai/<name> --api-base http://HOST:PORT/v1."
        ) from exc
    return llama_cpp


@dataclass(frozen=True)
class CallStats:
    """What one call cost the engine.

    Attributes:
        prompt_tokens: Tokens of the rendered prompt (the prefilled header included).
        cached_tokens: Prompt tokens reused from the slot's KV cache (not evaluated again).
        evaluated_tokens: Prompt tokens evaluated by this call.
        generated_tokens: Tokens generated (0 for a choice answered from one forward pass).
        seconds: Wall time inside the engine, the wait for the lock excluded.
        slot: The KV slot that served the call.
        mode: "choice", "text", "grammar", "json" or "chat" (a model without a chat template).
    """

    prompt_tokens: int
    cached_tokens: int
    evaluated_tokens: int
    generated_tokens: int
    seconds: float
    slot: int
    mode: str


_GLOBAL_LISTENERS: list[Callable[[CallStats], None]] = []


@contextlib.contextmanager
def listening_to_all_engines(listener: Callable[[CallStats], None]) -> Iterator[None]:
    """Call ``listener(stats)`` after every call of every :class:`LlamaCppEngine` of this process (for profiling)."""
    _GLOBAL_LISTENERS.append(listener)
    try:
        yield
    finally:
        _GLOBAL_LISTENERS.remove(listener)


class _Slot:
    """One llama.cpp context (KV cache) and what it holds."""

    def __init__(self, llm: Any, index: int) -> None:
        self.llm = llm
        self.index = index
        self.stable = 0  # tokens of the last request's prefix before its last message
        self.last_used = 0

    def tokens(self) -> Sequence[int]:
        n = getattr(self.llm, "n_tokens", 0)
        ids = getattr(self.llm, "input_ids", None)
        return () if ids is None or not n else ids[:n]

    def common_prefix(self, tokens: Sequence[int]) -> int:
        held = self.tokens()
        n = min(len(held), len(tokens))
        if not n:
            return 0
        mismatch = np.flatnonzero(np.asarray(held[:n]) != np.asarray(tokens[:n]))
        return int(mismatch[0]) if mismatch.size else n


class LlamaCppEngine:
    """A DSPy engine running a GGUF model in this process with llama.cpp.

    The model is loaded on the first call (or by :meth:`load`). Copies of the ``dspy.LM`` share the engine; a pickled
    engine (e.g. sent to another process) drops the loaded model and loads it again there on first use.

    Args:
        model_path: Path of the GGUF file.
        n_ctx: Context window in tokens (prompt plus completion), per slot.
        n_threads: CPU threads for generation and prompt evaluation.
        n_batch: Prompt-evaluation batch size.
        max_tokens: Completion budget when the request does not set one.
        temperature: Temperature when the request does not set one (0 = greedy).
        seed: Seeds the engine's private random generator, which draws a fresh sampling seed for every call that
            does not set ``seed`` (so repeated samples differ, and a run is reproducible call by call).
        prefix_cache: Reuse the KV cache of the common token prefix with earlier calls (llama.cpp's default). False
            re-evaluates every prompt from scratch (for measurements).
        slots: Most KV contexts kept at once (see the module docstring); 1 keeps a single context.
        constrain_chat: Constrain ChatAdapter requests (recommended for small models).
        chat_text: How much text a ``str`` output field may hold under the ChatAdapter grammar: ``"paragraph"``
            (lines without a blank line; default), ``"line"`` or ``"free"``.
        fast_text: For a ChatAdapter reply that is one ``str`` field in ``"paragraph"`` or ``"line"`` mode, generate
            without the grammar and stop at the first blank line (or newline) or ``[[`` instead; the reply is the
            same shape and grammar sampling is skipped (measured: 2x faster generation, since llama-cpp-python checks
            the grammar against the whole vocabulary at every token). A reply that comes out empty is generated
            again under the grammar.
        fast_choice: Answer a one-field ``Literal`` reply of single-token values from one forward pass (no
            generation, log-probabilities for free). False generates it under the grammar instead.
        stop_loops: Stop a one-``str``-field reply (the fast-text path) as soon as it repeats a run of this many words
            (see :mod:`fermi_dspy.repetition`): a small model that falls into a loop would otherwise generate until
            ``max_tokens``. None (default) never stops on a loop; :class:`LoopStoppingEngine` turns it on for one
            LM (the proposer's) while sharing the engine.
        llama_kwargs: Extra keyword arguments for ``llama_cpp.Llama``.
    """

    supports_response_schema = True
    supports_function_calling = False
    supports_reasoning = False
    supported_params = SUPPORTED_PARAMS

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int = 2,
        n_batch: int = 512,
        max_tokens: int = 512,
        temperature: float = 0.0,
        seed: int = 0,
        prefix_cache: bool = True,
        slots: int = 4,
        constrain_chat: bool = True,
        chat_text: str = "paragraph",
        fast_text: bool = True,
        fast_choice: bool = True,
        stop_loops: int | None = None,
        llama_kwargs: dict[str, Any] | None = None,
    ):
        if chat_text not in TEXT_MODES:
            raise ValueError(f"chat_text must be one of {TEXT_MODES}, got {chat_text!r}")
        if n_ctx < 256 or n_threads < 1 or max_tokens < 1 or slots < 1:
            raise ValueError(
                f"Need n_ctx >= 256, n_threads >= 1, max_tokens >= 1 and slots >= 1; got {n_ctx}, {n_threads}, "
                f"{max_tokens}, {slots}"
            )
        if stop_loops is not None and stop_loops < 2:
            raise ValueError(f"stop_loops must be None or at least 2 words, got {stop_loops}")
        self.model_path = str(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self.prefix_cache = prefix_cache
        self.slots = slots
        self.constrain_chat = constrain_chat
        self.chat_text = chat_text
        self.fast_text = fast_text
        self.fast_choice = fast_choice
        self.stop_loops = stop_loops
        self.llama_kwargs = dict(llama_kwargs or {})
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._clock = 0
        self._rng = random.Random(self.seed)
        self._valid_grammars: set[str] = set()
        self._formatter: Any = _UNSET
        self._choice_tokens: dict[tuple[str, tuple[str, ...]], tuple[int, ...] | None] = {}
        self._listeners: list[Callable[[CallStats], None]] = []

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def load(self) -> "LlamaCppEngine":
        """Load the model now (otherwise it loads on the first call). Returns self."""
        with self._lock:
            self._ensure_loaded()
        return self

    def _create_llama(self) -> Any:
        """A new llama.cpp context over the model file (the weights are memory-mapped, so shared)."""
        llama_cpp = import_llama_cpp()
        if not Path(self.model_path).is_file():
            raise FileNotFoundError(f"Model file {self.model_path} does not exist.")
        return llama_cpp.Llama(
            model_path=self.model_path, n_ctx=self.n_ctx, n_threads=self.n_threads, n_threads_batch=self.n_threads,
            n_batch=self.n_batch, verbose=False, **self.llama_kwargs,
        )

    def _open_slot(self) -> _Slot:
        start = time.perf_counter()
        slot = _Slot(self._create_llama(), len(self._slots))
        self._slots.append(slot)
        logger.info("Opened KV slot %d of %s in %.1f s (n_ctx=%d, n_threads=%d)", slot.index,
                    Path(self.model_path).name, time.perf_counter() - start, self.n_ctx, self.n_threads)
        return slot

    def _ensure_loaded(self) -> Any:
        if not self._slots:
            self._open_slot()
        return self._slots[0].llm

    @property
    def _llm(self) -> Any:
        """The first slot's model (None before loading)."""
        return self._slots[0].llm if self._slots else None

    @_llm.setter
    def _llm(self, llm: Any) -> None:
        self._slots = [] if llm is None else [_Slot(llm, 0)]

    def close(self) -> None:
        """Free the model. A later call loads it again."""
        with self._lock:
            slots, self._slots, self._formatter = self._slots, [], _UNSET
            self._choice_tokens = {}
        for slot in slots:
            slot.llm.close()

    def add_listener(self, listener: Callable[[CallStats], None]) -> None:
        """Call ``listener(stats)`` after every completed call (e.g. to profile a run)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[CallStats], None]) -> None:
        """Stop calling a listener added with :meth:`add_listener`."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_lock", "_slots", "_clock", "_rng", "_valid_grammars", "_formatter", "_choice_tokens",
                    "_listeners"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __deepcopy__(self, memo: dict) -> "LlamaCppEngine":
        # A loaded model is a shared resource: deep copies of programs and LMs keep using this engine.
        return self

    def dump_state(self) -> dict[str, Any]:
        """JSON-safe settings, so a program saved with this LM can be loaded (``allow_unsafe_lm_state=True``)."""
        return {key: value for key, value in self.__getstate__().items() if not key.startswith("_")}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> "LlamaCppEngine":
        """Rebuild an engine from :meth:`dump_state`: one engine per settings in a process, so the sync and async
        engines of a loaded LM (and LMs loaded with the same settings) share one model, its KV slots and its lock."""
        key = json.dumps(state, sort_keys=True, default=str)
        with _LOADED_LOCK:
            if key not in _LOADED:
                _LOADED[key] = cls(**state)
            return _LOADED[key]

    # -- the engine contract -------------------------------------------------------------------------------------

    def stream(self, request: Request) -> Any:
        """Streaming is not supported by this engine."""
        raise NotImplementedError("LlamaCppEngine does not stream; call it without streaming.")

    def complete(self, request: Request) -> Response:
        """Run one chat completion.

        Args:
            request: The canonical request built by ``dspy.LM``.

        Returns:
            The reply with the real token usage reported by llama.cpp (``cache_read_tokens``: prompt tokens reused).
        """
        return self.complete_with(request, stop_loops=self.stop_loops)

    def complete_with(self, request: Request, *, stop_loops: int | None) -> Response:
        """:meth:`complete` with the loop stop given for this call (see ``stop_loops``)."""
        messages = _to_chat_messages(request)
        config = request.config
        try:
            wants_json, schema = json_schema_of(config.response_format)
        except ValueError as exc:
            raise UnsupportedFeatureError(str(exc), provider="llama.cpp") from exc
        fields = None
        if not wants_json and self.constrain_chat and request.messages[-1].role == "user":
            fields = chat_adapter_fields(request.messages[-1].text or "")
        options: dict[str, Any] = {
            "temperature": self.temperature if config.temperature is None else config.temperature,
            "max_tokens": config.max_tokens or self.max_tokens,
            "stop": list(config.stop),
            "repeat_penalty": 1.0,
        }
        for name in ("top_p", "top_k", "frequency_penalty", "presence_penalty"):
            value = getattr(config, name)
            if value is not None:
                options[name] = value
        with self._lock:
            started = time.perf_counter()
            llm = self._ensure_loaded()
            formatter = self._chat_formatter(llm)
            options["seed"] = config.seed if config.seed is not None else self._rng.randrange(2**31)
            try:
                if formatter is None:
                    out, stats = self._complete_untemplated(llm, messages, wants_json, schema, fields, options)
                    prefill = ""
                else:
                    out, stats, prefill = self._complete_templated(formatter, messages, wants_json, schema, fields,
                                                                   options, config.logprobs, stop_loops)
            except ValueError as exc:
                if "exceed context window" in str(exc):
                    raise ContextLengthError(
                        f"{exc}. Shorten the prompt, or build the local LM with a larger n_ctx "
                        "(e.g. local_lm(..., n_ctx=8192)).", provider="llama.cpp",
                    ) from exc
                raise
            stats = CallStats(**{**stats, "seconds": time.perf_counter() - started})
        for listener in [*self._listeners, *_GLOBAL_LISTENERS]:
            listener(stats)
        choice = out["choices"][0]
        text = choice.get("text") if "text" in choice else (choice.get("message") or {}).get("content") or ""
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        if prefill:
            text = prefill + text + ("" if finish == "length" else COMPLETED_MARKER)
        return Response(
            id=out.get("id") or None,
            model=request.model,
            message=Message.assistant([TextPart(text)]),
            finish_reason=finish,
            usage=Usage(input_tokens=stats.prompt_tokens, output_tokens=stats.generated_tokens,
                        cache_read_tokens=stats.cached_tokens),
            logprobs=out.get("logprobs"),
        )

    # -- the two rendering paths ---------------------------------------------------------------------------------

    def _complete_untemplated(
        self, llm: Any, messages: list[dict[str, str]], wants_json: bool, schema: Any,
        fields: list[OutputField] | None, options: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A model without a chat template: llama.cpp's own chat handler, on the first slot."""
        if wants_json:
            grammar_text = _json_gbnf(None if schema is None else json.dumps(schema))
        elif fields:
            grammar_text = chat_adapter_gbnf(fields, self.chat_text)
        else:
            grammar_text = None
        if not self.prefix_cache:
            llm.reset()
        options["grammar"] = self._checked_grammar(llm, grammar_text) if grammar_text else None
        out = llm.create_chat_completion(messages=messages, **options)
        usage = out.get("usage") or {}
        prompt = int(usage.get("prompt_tokens", 0))
        stats = {"prompt_tokens": prompt, "cached_tokens": 0, "evaluated_tokens": prompt,
                 "generated_tokens": int(usage.get("completion_tokens", 0)), "slot": 0, "mode": "chat"}
        return out, stats

    def _complete_templated(
        self, formatter: Any, messages: list[dict[str, str]], wants_json: bool, schema: Any,
        fields: list[OutputField] | None, options: dict[str, Any], logprobs: int | None, stop_loops: int | None,
    ) -> tuple[dict[str, Any], dict[str, Any], str]:
        """Render with the model's chat template, pick a KV slot, and answer in the cheapest valid way."""
        # With the chat template at hand, the first ChatAdapter header is appended to the prompt: it is evaluated with
        # the prompt instead of being generated token by token, and the completion marker is not generated. The
        # adapter's closing format reminder is then redundant and dropped.
        prefill = chat_adapter_header(fields[0].name) if fields else ""
        if prefill:
            messages[-1]["content"] = without_format_reminder(messages[-1]["content"])
        rendered = formatter(messages=messages)
        first = self._slots[0].llm
        tokens = first.tokenize((rendered.prompt + prefill).encode("utf-8"), add_bos=not rendered.added_special,
                                special=True)
        stable = _stable_prefix_tokens(first, rendered, messages[-1]["content"])
        slot, cached = self._pick_slot(tokens, stable)
        llm = slot.llm
        if rendered.stop:
            options["stop"] += rendered.stop if isinstance(rendered.stop, list) else [rendered.stop]
        choices = self._single_token_choices(first, fields) if fields and len(fields) == 1 else None
        stats = {"prompt_tokens": len(tokens), "cached_tokens": cached, "slot": slot.index}
        if choices is not None:
            out = self._choose(llm, tokens, cached, choices, options, logprobs)
            return out, {**stats, "evaluated_tokens": len(tokens) - out.pop("_reused"), "generated_tokens": 0,
                         "mode": "choice"}, prefill

        fast = bool(prefill) and self.fast_text and self.chat_text != "free" and len(fields) == 1 \
            and is_plain_text(fields[0])
        if wants_json:
            grammar_text, mode = _json_gbnf(None if schema is None else json.dumps(schema)), "json"
        elif fields:
            grammar_text, mode = chat_adapter_gbnf(fields, self.chat_text, prefilled=True), "grammar"
        else:
            grammar_text, mode = None, "text"
        generated = evaluated = 0
        out = None
        if fast:
            mode = "text"
            stops = ["\n", "[["] if self.chat_text == "line" else ["\n\n", "[["]
            criteria = _with_loop_stop(rendered.stopping_criteria, llm, len(tokens), stop_loops)
            out = llm.create_completion(prompt=tokens, stopping_criteria=criteria,
                                        **{**options, "grammar": None, "stop": options["stop"] + stops})
            generated += _usage(out, "completion_tokens")
            evaluated += len(tokens) - cached
            choice = out["choices"][0]
            value = choice["text"].strip()
            if value:
                choice["text"] = value + ("" if choice.get("finish_reason") == "length" else "\n\n")
            else:
                logger.debug("Empty unconstrained reply; generating again under the grammar.")
                out, cached = None, min(slot.common_prefix(tokens), max(0, len(tokens) - 1))
        if out is None:
            options["grammar"] = self._checked_grammar(llm, grammar_text) if grammar_text else None
            out = llm.create_completion(prompt=tokens, stopping_criteria=rendered.stopping_criteria, **options)
            generated += _usage(out, "completion_tokens")
            evaluated += len(tokens) - cached
        out.pop("logprobs", None)  # this path computes none (llama-cpp-python would need logits_all=True)
        return out, {**stats, "evaluated_tokens": evaluated, "generated_tokens": generated, "mode": mode}, prefill

    # -- KV slots --------------------------------------------------------------------------------------------------

    def _pick_slot(self, tokens: Sequence[int], stable: int) -> tuple[_Slot, int]:
        """The slot to serve a request from, and how many of its tokens are reused.

        A slot is reusable when the request keeps all of the slot's stable prefix; among those the longest common
        prefix wins. Otherwise a new slot is opened while there is room, else the least recently used is taken.
        """
        self._clock += 1
        if not self.prefix_cache:
            slot = self._slots[0]
            slot.llm.reset()
            slot.stable, slot.last_used = stable, self._clock
            return slot, 0
        best, best_common = None, -1
        for slot in self._slots:
            common = slot.common_prefix(tokens)
            if (slot.stable <= common or len(slot.tokens()) == 0) and common > best_common:
                best, best_common = slot, common
        if best is None:
            best = self._open_slot() if len(self._slots) < self.slots else min(self._slots, key=lambda s: s.last_used)
            best_common = best.common_prefix(tokens)
        best.stable, best.last_used = stable, self._clock
        # llama.cpp re-evaluates the last prompt token when the whole prompt is cached, to refresh the logits.
        return best, min(best_common, max(0, len(tokens) - 1))

    # -- one forward pass for a choice -----------------------------------------------------------------------------

    def _single_token_choices(self, llm: Any, fields: list[OutputField]) -> tuple[list[str], list[int]] | None:
        """The choices of a one-field ``Literal`` reply and their token ids, when each is exactly one token."""
        if not self.fast_choice:
            return None
        field = fields[0]
        choices = literal_choices(field.type_name or "")
        if not choices:
            return None
        key = (field.name, tuple(choices))
        if key not in self._choice_tokens:
            header = chat_adapter_header(field.name).encode("utf-8")
            base = llm.tokenize(header, add_bos=False, special=False)
            ids: list[int] = []
            for choice in choices:
                full = llm.tokenize(header + choice.encode("utf-8"), add_bos=False, special=False)
                if len(full) != len(base) + 1 or list(full[: len(base)]) != list(base):
                    ids = []
                    break
                ids.append(int(full[-1]))
            self._choice_tokens[key] = tuple(ids) if ids and len(set(ids)) == len(ids) else None
        ids = self._choice_tokens[key]
        return None if ids is None else (choices, list(ids))

    def _choose(
        self, llm: Any, tokens: Sequence[int], reuse: int, choices: tuple[list[str], list[int]],
        options: dict[str, Any], logprobs: int | None,
    ) -> dict[str, Any]:
        """Evaluate the prompt (reusing ``reuse`` cached tokens); pick the best allowed token at the next position."""
        if len(tokens) > self.n_ctx:
            raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {self.n_ctx}")
        llm.n_tokens = reuse
        llm._ctx.kv_cache_seq_rm(-1, reuse, -1)
        llm.eval(list(tokens[reuse:]))
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64)
        log_probs = logits - (logits.max() + math.log(np.exp(logits - logits.max()).sum()))
        names, ids = choices
        allowed = log_probs[ids]
        temperature = float(options.get("temperature") or 0.0)
        if temperature <= 0:
            picked = int(np.argmax(allowed))
        else:
            weights = np.exp((allowed - allowed.max()) / temperature)
            picked = random.Random(options["seed"]).choices(range(len(names)), weights=weights.tolist())[0]
        out: dict[str, Any] = {"choices": [{"text": names[picked] + "\n\n", "finish_reason": "stop"}], "_reused": reuse}
        if logprobs is not None:
            order = sorted(range(len(names)), key=lambda i: -allowed[i])[: max(0, logprobs)]
            top = tuple(TopLogprob(token=names[i], logprob=float(allowed[i])) for i in order)
            out["logprobs"] = (TokenLogprob(token=names[picked], logprob=float(allowed[picked]), top=top),)
        return out

    # -- prompt rendering and grammars ---------------------------------------------------------------------------

    def _chat_formatter(self, llm: Any) -> Any:
        """The model's own chat template (GGUF metadata) as a llama.cpp formatter, or None if it has none."""
        if self._formatter is _UNSET:
            self._formatter = None
            template = (getattr(llm, "metadata", None) or {}).get("tokenizer.chat_template")
            if template:
                from llama_cpp import llama_chat_format

                eos, bos = llm.token_eos(), llm.token_bos()
                self._formatter = llama_chat_format.Jinja2ChatFormatter(
                    template=template,
                    eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
                    bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
                    stop_token_ids=[eos],
                )
        return self._formatter

    def _checked_grammar(self, llm: Any, text: str) -> Any:
        """A LlamaGrammar for ``text``, parsed once by llama.cpp first: an invalid grammar would crash the sampler."""
        llama_cpp = import_llama_cpp()
        if text not in self._valid_grammars:
            sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, text.encode("utf-8"), b"root")
            if not sampler:
                raise InvalidRequestError(
                    "llama.cpp rejected the output grammar built for this request; please report this with the "
                    f"signature used. Grammar:\n{text[:2000]}", provider="llama.cpp",
                )
            llama_cpp.llama_sampler_free(sampler)
            self._valid_grammars.add(text)
        return llama_cpp.LlamaGrammar.from_string(text, verbose=False)


class AsyncLlamaCppEngine:
    """The async counterpart DSPy needs for ``await program.acall(...)``: runs the sync engine in a worker thread.

    Args:
        engine: The :class:`LlamaCppEngine` doing the work (and holding the lock).
    """

    def __init__(self, engine: "LlamaCppEngine | LoopStoppingEngine"):
        self.engine = engine

    async def complete(self, request: Request) -> Response:
        """Run :meth:`LlamaCppEngine.complete` without blocking the event loop."""
        import anyio

        return await anyio.to_thread.run_sync(self.engine.complete, request)

    def stream(self, request: Request) -> Any:
        """Streaming is not supported by this engine."""
        raise NotImplementedError("LlamaCppEngine does not stream; call it without streaming.")

    async def aclose(self) -> None:
        """Nothing to release: the sync engine owns the model."""

    def __deepcopy__(self, memo: dict) -> "AsyncLlamaCppEngine":
        return self

    def dump_state(self) -> dict[str, Any]:
        """JSON-safe settings of the sync engine, so an LM with this async engine can be saved (see ``dspy.LM``)."""
        return {"loop_stopping": isinstance(self.engine, LoopStoppingEngine), "engine": self.engine.dump_state()}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> "AsyncLlamaCppEngine":
        """Rebuild from :meth:`dump_state`."""
        sync = LoopStoppingEngine if state.get("loop_stopping") else LlamaCppEngine
        return cls(sync.load_state(state["engine"]))


_LOADED: dict[str, LlamaCppEngine] = {}
_LOADED_LOCK = threading.Lock()


class LoopStoppingEngine:
    """A :class:`LlamaCppEngine` (the same model, KV slots, lock and listeners) whose free-text replies stop where they
    start to loop: for the LM that writes instructions, whose proposals are cut there anyway
    (:func:`fermi_dspy.repetition.without_loop`), so the rest of a loop is never generated.

    Args:
        engine: The shared engine.
        words: The run of words that, repeated, marks a loop.
    """

    supports_response_schema = LlamaCppEngine.supports_response_schema
    supports_function_calling = LlamaCppEngine.supports_function_calling
    supports_reasoning = LlamaCppEngine.supports_reasoning
    supported_params = LlamaCppEngine.supported_params

    def __init__(self, engine: LlamaCppEngine, words: int = LOOP_WORDS):
        if words < 2:
            raise ValueError(f"words must be at least 2, got {words}")
        self.engine, self.words = engine, words

    def complete(self, request: Request) -> Response:
        """:meth:`LlamaCppEngine.complete`, stopping a free-text reply at its loop."""
        return self.engine.complete_with(request, stop_loops=self.words)

    def stream(self, request: Request) -> Any:
        """Streaming is not supported by this engine."""
        return self.engine.stream(request)

    def close(self) -> None:
        """Close the shared engine."""
        self.engine.close()

    def __getattr__(self, name: str) -> Any:  # listeners, slots, settings: the shared engine's
        if name == "engine":
            raise AttributeError(name)
        return getattr(self.engine, name)

    def __deepcopy__(self, memo: dict) -> "LoopStoppingEngine":
        return self

    def dump_state(self) -> dict[str, Any]:
        """JSON-safe settings (see :meth:`LlamaCppEngine.dump_state`)."""
        return {"engine": self.engine.dump_state(), "words": self.words}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> "LoopStoppingEngine":
        """Rebuild from :meth:`dump_state`."""
        return cls(LlamaCppEngine.load_state(state["engine"]), state.get("words", LOOP_WORDS))


class _StopOnLoop:
    """A llama.cpp stopping criterion: true once the generated text repeats a run of `words` words."""

    def __init__(self, llm: Any, prompt_tokens: int, words: int):
        self.llm, self.prompt_tokens, self.words = llm, prompt_tokens, words

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        generated = input_ids[self.prompt_tokens :]
        if len(generated) <= self.words:
            return False
        text = self.llm.detokenize([int(token) for token in generated]).decode("utf-8", errors="ignore")
        return loop_start(text, self.words, complete_words_only=True) is not None


def _with_loop_stop(criteria: Any, llm: Any, prompt_tokens: int, words: int | None) -> Any:
    """The template's stopping criteria plus a stop on a loop (see `LlamaCppEngine`'s ``stop_loops``)."""
    if words is None:
        return criteria
    llama_cpp = import_llama_cpp()
    return llama_cpp.StoppingCriteriaList([*(criteria or []), _StopOnLoop(llm, prompt_tokens, words)])


def _usage(out: dict[str, Any], key: str) -> int:
    return int((out.get("usage") or {}).get(key) or 0)


def _stable_prefix_tokens(llm: Any, rendered: Any, last_content: str) -> int:
    """Tokens of the rendered prompt before its last message's text (the part later calls are likely to share)."""
    offset = rendered.prompt.rfind(last_content) if last_content else -1
    if offset <= 0:
        return 0
    head = llm.tokenize(rendered.prompt[:offset].encode("utf-8"), add_bos=not rendered.added_special, special=True)
    return max(0, len(head) - 1)  # the boundary token may merge with the message's first characters


@functools.lru_cache(maxsize=128)
def _json_gbnf(schema_json: str | None) -> str:
    """GBNF for a JSON schema (or any JSON object when there is no schema)."""
    from llama_cpp import llama_grammar

    if schema_json is None:
        return llama_grammar.JSON_GBNF
    return llama_grammar.json_schema_to_gbnf(schema_json)


def _to_chat_messages(request: Request) -> list[dict[str, str]]:
    """OpenAI-style chat messages for llama.cpp's chat template."""
    messages: list[dict[str, str]] = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(
            getattr(part, "text", "") for part in request.system
        )
        messages.append({"role": "system", "content": system})
    for message in request.messages:
        if any(part.type != "text" for part in message.parts):
            kinds = sorted({part.type for part in message.parts if part.type != "text"})
            raise UnsupportedFeatureError(
                f"The local llama.cpp engine takes text only, not {kinds}.", provider="llama.cpp"
            )
        if message.role not in ("user", "assistant", "developer"):
            raise UnsupportedFeatureError(f"The local llama.cpp engine does not take {message.role!r} messages.",
                                          provider="llama.cpp")
        role = "system" if message.role == "developer" else message.role
        messages.append({"role": role, "content": message.text or ""})
    return messages
