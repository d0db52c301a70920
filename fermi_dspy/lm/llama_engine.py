"""In-process local LM: a DSPy 3.4 engine around ``llama_cpp.Llama``.

:class:`LlamaCppEngine` implements DSPy's engine contract (``complete(Request) -> Response``, ``stream``, ``close``),
so ``dspy.LM("local/<name>", engine=LlamaCppEngine(path))`` gets DSPy's cache, retries, history, callbacks and usage
tracking for free. Every structured call is constrained by a llama.cpp grammar so that small models always produce
output the adapter can parse: the JSON schema sent by :class:`dspy.JSONAdapter`, or the ``[[ ## field ## ]]`` sections
requested by the default :class:`dspy.ChatAdapter` (see :mod:`fermi_dspy.lm.grammar`).

For ChatAdapter requests the prompt is rendered with the model's own chat template and the first ``[[ ## field ## ]]``
header is appended to it, so the forced header is evaluated with the prompt instead of being generated token by token,
and the reply ends at the blank line after the last value (the engine appends ``[[ ## completed ## ]]`` itself).

The ``Llama`` object is not thread-safe (concurrent calls segfault), so calls are serialized by a lock; DSPy's
threaded ``Evaluate`` still works, one generation at a time. llama.cpp keeps the KV cache of the previous call and
reuses its longest common token prefix, so consecutive calls that share a system prompt only evaluate the new tail
(measured: 2.5-4x faster per call on a ~400-token prompt).

Threads: llama.cpp's worker threads spin while they wait. If processes running models at the same time together use
more threads than there are cores, every call becomes ~30x slower (measured: 37 s instead of 1.2 s per call). Give
each concurrent process ``n_threads = cores // processes``.
"""

import functools
import json
import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

from dspy.lm15 import (
    ContextLengthError,
    InvalidRequestError,
    Message,
    Request,
    Response,
    TextPart,
    UnsupportedFeatureError,
    Usage,
)

from fermi_dspy.lm.errors import INSTALL_LOCAL_COMMAND, EngineNotInstalledError
from fermi_dspy.lm.grammar import (
    COMPLETED_MARKER,
    TEXT_MODES,
    chat_adapter_fields,
    chat_adapter_gbnf,
    chat_adapter_header,
    is_plain_text,
    json_schema_of,
    without_format_reminder,
)

logger = logging.getLogger(__name__)

_UNSET = object()

#: Generation settings the engine honours (DSPy's JSONAdapter checks for ``response_format``).
SUPPORTED_PARAMS = frozenset(
    {"temperature", "max_tokens", "top_p", "top_k", "stop", "seed", "response_format", "frequency_penalty",
     "presence_penalty"}
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


class LlamaCppEngine:
    """A DSPy engine running a GGUF model in this process with llama.cpp.

    The model is loaded on the first call (or by :meth:`load`). Copies of the ``dspy.LM`` share the engine; a pickled
    engine (e.g. sent to another process) drops the loaded model and loads it again there on first use.

    Args:
        model_path: Path of the GGUF file.
        n_ctx: Context window in tokens (prompt plus completion).
        n_threads: CPU threads for generation and prompt evaluation.
        n_batch: Prompt-evaluation batch size.
        max_tokens: Completion budget when the request does not set one.
        temperature: Temperature when the request does not set one (0 = greedy).
        seed: Seeds the engine's private random generator, which draws a fresh sampling seed for every call that
            does not set ``seed`` (so repeated samples differ, and a run is reproducible call by call).
        prefix_cache: Reuse the KV cache of the previous call's common token prefix (llama.cpp's default). False
            re-evaluates every prompt from scratch (for measurements).
        ram_cache_mb: If > 0, also keep up to this many MB of saved KV states (``llama_cpp.LlamaRAMCache``). It can
            help when calls alternate between several long prompt prefixes; for consecutive calls sharing a prefix
            it costs time (measured: 1.16 instead of 0.84 s per call), so it is off by default.
        constrain_chat: Constrain ChatAdapter requests with a grammar (recommended for small models).
        chat_text: How much text a ``str`` output field may hold under the ChatAdapter grammar: ``"paragraph"``
            (lines without a blank line; default), ``"line"`` or ``"free"``.
        fast_text: For a ChatAdapter reply that is one ``str`` field in ``"paragraph"`` or ``"line"`` mode, generate
            without the grammar and stop at the first blank line (or newline) or ``[[`` instead; the reply is the
            same shape and grammar sampling is skipped (measured: 2x faster generation, since llama-cpp-python checks
            the grammar against the whole vocabulary at every token). A reply that comes out empty is generated
            again under the grammar.
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
        ram_cache_mb: int = 0,
        constrain_chat: bool = True,
        chat_text: str = "paragraph",
        fast_text: bool = True,
        llama_kwargs: dict[str, Any] | None = None,
    ):
        if chat_text not in TEXT_MODES:
            raise ValueError(f"chat_text must be one of {TEXT_MODES}, got {chat_text!r}")
        if n_ctx < 256 or n_threads < 1 or max_tokens < 1:
            raise ValueError(
                f"Need n_ctx >= 256, n_threads >= 1 and max_tokens >= 1; got {n_ctx}, {n_threads}, {max_tokens}"
            )
        self.model_path = str(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self.prefix_cache = prefix_cache
        self.ram_cache_mb = ram_cache_mb
        self.constrain_chat = constrain_chat
        self.chat_text = chat_text
        self.fast_text = fast_text
        self.llama_kwargs = dict(llama_kwargs or {})
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._llm: Any = None
        self._rng = random.Random(self.seed)
        self._valid_grammars: set[str] = set()
        self._formatter: Any = _UNSET

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def load(self) -> "LlamaCppEngine":
        """Load the model now (otherwise it loads on the first call). Returns self."""
        with self._lock:
            self._ensure_loaded()
        return self

    def _ensure_loaded(self) -> Any:
        if self._llm is not None:
            return self._llm
        llama_cpp = import_llama_cpp()
        if not Path(self.model_path).is_file():
            raise FileNotFoundError(f"Model file {self.model_path} does not exist.")
        start = time.perf_counter()
        llm = llama_cpp.Llama(
            model_path=self.model_path, n_ctx=self.n_ctx, n_threads=self.n_threads, n_threads_batch=self.n_threads,
            n_batch=self.n_batch, verbose=False, **self.llama_kwargs,
        )
        if self.ram_cache_mb > 0:
            llm.set_cache(llama_cpp.LlamaRAMCache(capacity_bytes=self.ram_cache_mb << 20))
        self._llm = llm
        logger.info("Loaded %s in %.1f s (n_ctx=%d, n_threads=%d)", Path(self.model_path).name,
                    time.perf_counter() - start, self.n_ctx, self.n_threads)
        return llm

    def close(self) -> None:
        """Free the model. A later call loads it again."""
        with self._lock:
            llm, self._llm, self._formatter = self._llm, None, _UNSET
        if llm is not None:
            llm.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_lock", "_llm", "_rng", "_valid_grammars", "_formatter"):
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
        """Rebuild an engine from :meth:`dump_state`."""
        return cls(**state)

    # -- the engine contract -------------------------------------------------------------------------------------

    def stream(self, request: Request) -> Any:
        """Streaming is not supported by this engine."""
        raise NotImplementedError("LlamaCppEngine does not stream; call it without streaming.")

    def complete(self, request: Request) -> Response:
        """Run one chat completion.

        Args:
            request: The canonical request built by ``dspy.LM``.

        Returns:
            The reply with the real token usage reported by llama.cpp.
        """
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
            llm = self._ensure_loaded()
            formatter = self._chat_formatter(llm)
            # With the chat template at hand, the first ChatAdapter header is appended to the prompt: it is evaluated
            # with the prompt instead of being generated token by token, and the completion marker is not generated.
            # The adapter's closing format reminder is then redundant and dropped.
            prefill = chat_adapter_header(fields[0].name) if fields and formatter is not None else ""
            if prefill:
                messages[-1]["content"] = without_format_reminder(messages[-1]["content"])
            fast = bool(prefill) and self.fast_text and self.chat_text != "free" and len(fields) == 1 \
                and is_plain_text(fields[0])
            if wants_json:
                grammar_text = _json_gbnf(None if schema is None else json.dumps(schema))
            elif fields:
                grammar_text = chat_adapter_gbnf(fields, self.chat_text, prefilled=bool(prefill))
            else:
                grammar_text = None
            options["seed"] = config.seed if config.seed is not None else self._rng.randrange(2**31)
            if not self.prefix_cache:
                llm.reset()
            discarded: dict[str, int] = {}  # usage of an unconstrained attempt that came out empty
            try:
                if formatter is None:
                    options["grammar"] = self._checked_grammar(llm, grammar_text) if grammar_text else None
                    out = llm.create_chat_completion(messages=messages, **options)
                    text = out["choices"][0]["message"].get("content") or ""
                else:
                    rendered = formatter(messages=messages)
                    prompt = llm.tokenize((rendered.prompt + prefill).encode("utf-8"),
                                          add_bos=not rendered.added_special, special=True)
                    if rendered.stop:
                        options["stop"] += rendered.stop if isinstance(rendered.stop, list) else [rendered.stop]
                    out = None
                    if fast:
                        stops = ["\n", "[["] if self.chat_text == "line" else ["\n\n", "[["]
                        out = llm.create_completion(prompt=prompt, stopping_criteria=rendered.stopping_criteria,
                                                    **{**options, "grammar": None, "stop": options["stop"] + stops})
                        choice = out["choices"][0]
                        value = choice["text"].strip()
                        if value:
                            choice["text"] = value + ("" if choice.get("finish_reason") == "length" else "\n\n")
                        else:
                            logger.debug("Empty unconstrained reply; generating again under the grammar.")
                            out, discarded = None, out.get("usage") or {}
                    if out is None:
                        options["grammar"] = self._checked_grammar(llm, grammar_text) if grammar_text else None
                        out = llm.create_completion(prompt=prompt, stopping_criteria=rendered.stopping_criteria,
                                                    **options)
                    text = out["choices"][0]["text"]
            except ValueError as exc:
                if "exceed context window" in str(exc):
                    raise ContextLengthError(
                        f"{exc}. Shorten the prompt, or build the local LM with a larger n_ctx "
                        "(e.g. local_lm(..., n_ctx=8192)).", provider="llama.cpp",
                    ) from exc
                raise
        finish = "length" if out["choices"][0].get("finish_reason") == "length" else "stop"
        if prefill:
            text = prefill + text + ("" if finish == "length" else COMPLETED_MARKER)
        usage = out.get("usage") or {}
        if discarded:  # the empty first attempt was paid for too
            usage = {key: usage.get(key, 0) + discarded.get(key, 0) for key in ("prompt_tokens", "completion_tokens")}
        return Response(
            id=out.get("id") or None,
            model=request.model,
            message=Message.assistant([TextPart(text)]),
            finish_reason=finish,
            usage=Usage(input_tokens=usage.get("prompt_tokens", 0), output_tokens=usage.get("completion_tokens", 0)),
        )

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

    def __init__(self, engine: LlamaCppEngine):
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
