"""Turn user configuration (``--lm`` strings, environment variables) into ``dspy.LM`` objects.

Spec strings:

* ``"local"``: the default embedded model (:data:`~fermi_dspy.lm.models.DEFAULT_MODEL`, or ``local_model=``);
* ``"local:<name>"``: a registered embedded model, e.g. ``"local:qwen2.5-coder-1.5b"``;
* a path to a ``.gguf`` file (``"local:/models/x.gguf"`` also works);
* anything else is a DSPy/LiteLLM model string: ``"openai/gpt-4o-mini"``, or ``"openai/<served-name>"`` together
  with ``api_base=`` for vLLM, Ollama (``/v1``), llama.cpp or any other OpenAI-compatible server.

With no spec, ``$FERMI_PROPOSER_LM`` (proposer role only), then ``$FERMI_LM``, then ``"local"`` is used.

Local models run in this process (``route="inprocess"``, the default: fastest, and every structured call parses), or
behind a local OpenAI-compatible server (``route="server"``), which is started once per model and stopped at exit.
"""

import contextlib
import logging
import os
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fermi_dspy.lm.errors import LMSpecError
from fermi_dspy.lm.llama_engine import AsyncLlamaCppEngine, LlamaCppEngine, LoopStoppingEngine, import_llama_cpp
from fermi_dspy.lm.models import DEFAULT_MODEL, MODELS, model_alias, resolve_model
from fermi_dspy.lm.server import LlamaServer, server_lm
from fermi_dspy.repetition import LOOP_WORDS

logger = logging.getLogger(__name__)

#: Environment variable with the task LM spec.
LM_ENV = "FERMI_LM"
#: Environment variable with the proposer LM spec (falls back to :data:`LM_ENV`).
PROPOSER_LM_ENV = "FERMI_PROPOSER_LM"
#: Environment variable naming the default embedded model for ``"local"``.
LOCAL_MODEL_ENV = "FERMI_LOCAL_MODEL"
#: Environment variable with the llama.cpp thread count (default 2). With several processes running models at once,
#: give each at most cores / processes threads: oversubscribed llama.cpp threads spin and run ~30x slower (measured).
THREADS_ENV = "FERMI_DSPY_THREADS"
DEFAULT_THREADS = 2

Role = Literal["task", "proposer"]
Route = Literal["inprocess", "server"]

#: Defaults per role: answering is deterministic and short; proposing instructions samples and writes more.
# Completion budgets are sized to the output: an answer (room for a short chain of thought), and one prompt of the
# 2-4 sentences the proposer signature asks for. Measured (main job, Qwen-0.5B proposer, 2 cores): with 384 tokens a
# proposal averaged 108 generated tokens and 9.3 s, the rambling ones running to the cap.
ROLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "task": {"temperature": 0.0, "max_tokens": 256},
    "proposer": {"temperature": 0.7, "max_tokens": 192},
}


def role_stop_loops(role: str, route: str) -> int | None:
    """The loop stop of a local LM for `role`: the proposer's proposals are cut where they start to loop
    (`fermi_dspy.repetition`), so its in-process engine stops generating there; task replies are never cut."""
    return LOOP_WORDS if role == "proposer" and route == "inprocess" else None


_SHARED_LOCK = threading.Lock()
_ENGINES: dict[tuple, LlamaCppEngine] = {}
_SERVERS: dict[tuple, LlamaServer] = {}


@dataclass(frozen=True)
class LMSpec:
    """A parsed LM spec.

    Attributes:
        kind: ``"local"`` for an embedded/GGUF model, ``"remote"`` for a DSPy/LiteLLM model string.
        model: The registry name or GGUF path (local), or the model string (remote).
    """

    kind: Literal["local", "remote"]
    model: str


def resolve_spec(spec: str | None = None, *, role: Role = "task", local_model: str | None = None) -> LMSpec:
    """Parse an LM spec, falling back to the environment and then to the default local model.

    Args:
        spec: The spec string, or None to read ``$FERMI_PROPOSER_LM`` (proposer role) / ``$FERMI_LM``.
        role: ``"task"`` or ``"proposer"``.
        local_model: The model ``"local"`` means (default ``$FERMI_LOCAL_MODEL`` or ``qwen2.5-coder-0.5b``).

    Returns:
        The parsed spec.

    Raises:
        LMSpecError: The spec is empty or malformed.
    """
    if role not in ROLE_DEFAULTS:
        raise LMSpecError(f"role must be 'task' or 'proposer', got {role!r}")
    if spec is None:
        spec = (os.environ.get(PROPOSER_LM_ENV) if role == "proposer" else None) or os.environ.get(LM_ENV) or "local"
    text = spec.strip()
    if not text:
        raise LMSpecError(
            "The LM spec is empty. Use 'local', 'local:<model>', a .gguf path, or e.g. 'openai/gpt-4o-mini'."
        )
    default_local = local_model or os.environ.get(LOCAL_MODEL_ENV) or DEFAULT_MODEL
    lowered = text.lower()
    if lowered == "local":
        return LMSpec("local", default_local)
    if lowered.startswith("local:"):
        name = text.split(":", 1)[1].strip()
        if not name:
            raise LMSpecError(f"{spec!r} names no model. Use 'local:<model>' with one of: {', '.join(MODELS)}.")
        return LMSpec("local", name)
    if lowered.endswith(".gguf") or Path(text).expanduser().is_file():
        return LMSpec("local", text)
    if any(ch.isspace() for ch in text):
        raise LMSpecError(f"LM spec {spec!r} contains whitespace; expected e.g. 'openai/gpt-4o-mini' or 'local'.")
    if lowered in MODELS:
        raise LMSpecError(f"{text!r} is an embedded model; write 'local:{lowered}' to use it.")
    return LMSpec("remote", text)


def _check_reachable(api_base: str, timeout: float = 3.0) -> None:
    """Fail fast, with a clear message, if nothing listens at ``api_base``."""
    parsed = urllib.parse.urlparse(api_base)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise LMSpecError(f"api_base {api_base!r} is not an http(s) URL; expected e.g. http://127.0.0.1:8000/v1")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise LMSpecError(
            f"Cannot reach the OpenAI-compatible server at {api_base} ({exc.strerror or exc}). Start the server, or "
            "fix api_base (it usually ends in /v1), or use the embedded model with --lm local."
        ) from exc


def _threads_from_env() -> int:
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return DEFAULT_THREADS
    if not value.isdigit() or int(value) < 1:
        raise LMSpecError(f"{THREADS_ENV}={value!r} is not a positive integer.")
    return int(value)


def _shared_engine(path: Path, n_ctx: int, n_threads: int, engine_kwargs: dict[str, Any]) -> LlamaCppEngine:
    """One engine (one loaded model) per model file and settings, shared by the task and proposer LMs."""
    key = (str(path.resolve()), n_ctx, n_threads, tuple(sorted(engine_kwargs.items())))
    with _SHARED_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = LlamaCppEngine(path, n_ctx=n_ctx, n_threads=n_threads, **engine_kwargs)
        return engine


def _shared_server(path: Path, alias: str, n_ctx: int, n_threads: int) -> LlamaServer:
    """One running server per model file and settings; stopped at interpreter exit or by stop_all_servers()."""
    key = (str(path.resolve()), alias, n_ctx, n_threads)
    with _SHARED_LOCK:
        server = _SERVERS.get(key)
        if server is None or not server.is_running():
            server = _SERVERS[key] = LlamaServer(path, alias=alias, n_ctx=n_ctx, n_threads=n_threads).start()
        return server


def local_lm(
    model: str | Path = DEFAULT_MODEL,
    *,
    route: Route = "inprocess",
    n_ctx: int = 4096,
    n_threads: int | None = None,
    max_tokens: int = 512,
    temperature: float = 0.0,
    cache: bool = True,
    stop_loops: int | None = None,
    **engine_kwargs: Any,
) -> Any:
    """A ``dspy.LM`` for an embedded model or a local GGUF file, with no API key and no network.

    Args:
        model: A registry name (see :data:`~fermi_dspy.lm.models.MODELS`) or a GGUF path. A registered model is
            downloaded and verified on first use.
        route: ``"inprocess"`` (llama.cpp in this process, grammar-constrained: every ChatAdapter/JSONAdapter reply
            parses) or ``"server"`` (a local OpenAI-compatible server, stopped at interpreter exit).
        n_ctx: Context window in tokens.
        n_threads: CPU threads (default ``$FERMI_DSPY_THREADS`` or 2). Never let the processes running models at the
            same time use more threads than there are cores: oversubscribed llama.cpp slows down ~30x.
        max_tokens: Completion budget per call.
        temperature: Sampling temperature (0 = greedy).
        cache: Use DSPy's response cache.
        stop_loops: Stop a free-text reply as soon as it repeats a run of this many words (in-process route; the
            engine is still shared, see :class:`~fermi_dspy.lm.llama_engine.LoopStoppingEngine`). None: never.
        **engine_kwargs: More :class:`~fermi_dspy.lm.llama_engine.LlamaCppEngine` options (in-process route only),
            e.g. ``prefix_cache=False`` or ``chat_text="line"``.

    Returns:
        A ``dspy.LM`` named ``local/<model>`` (in-process) or ``openai/<model>`` (server).

    Raises:
        EngineNotInstalledError: llama-cpp-python is missing (the message has the install command).
        UnknownModelError, ModelFetchError, ChecksumMismatchError: The model cannot be found or verified.
    """
    import dspy

    if route not in ("inprocess", "server"):
        raise LMSpecError(f"route must be 'inprocess' or 'server', got {route!r}")
    import_llama_cpp()
    n_threads = n_threads or _threads_from_env()
    path = resolve_model(model)
    alias = model_alias(model)
    if route == "server":
        if engine_kwargs or stop_loops is not None:
            named = sorted(engine_kwargs) + (["stop_loops"] if stop_loops is not None else [])
            raise LMSpecError(f"{named} apply to the in-process route only.")
        server = _shared_server(path, alias, n_ctx, n_threads)
        return server_lm(server, max_tokens=max_tokens, temperature=temperature, cache=cache)
    engine = _shared_engine(path, n_ctx, n_threads, engine_kwargs)
    if stop_loops is not None:
        engine = LoopStoppingEngine(engine, stop_loops)
    return dspy.LM(f"local/{alias}", engine=engine, async_engine=AsyncLlamaCppEngine(engine), max_tokens=max_tokens,
                   temperature=temperature, cache=cache, num_retries=0)


def build_lm(
    spec: str | None = None,
    *,
    role: Role = "task",
    local_model: str | None = None,
    route: Route = "inprocess",
    api_base: str | None = None,
    api_key: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    cache: bool = True,
    num_retries: int | None = None,
    timeout: float | None = None,
    check_connection: bool = True,
) -> Any:
    """Build the ``dspy.LM`` for a role from user configuration.

    Args:
        spec: ``"local"``, ``"local:<model>"``, a GGUF path, or a DSPy/LiteLLM model string. None reads
            ``$FERMI_PROPOSER_LM`` (proposer) / ``$FERMI_LM``, else ``"local"``.
        role: ``"task"`` (answers; defaults temperature 0.0, 256 tokens) or ``"proposer"`` (writes instructions;
            temperature 0.7, 192 tokens).
        local_model: The embedded model that ``"local"`` means.
        route: For local models, ``"inprocess"`` or ``"server"``.
        api_base: Base URL of an OpenAI-compatible server, e.g. ``http://127.0.0.1:8000/v1`` (ignored for local specs,
            so one setting can serve a local task LM and a remote proposer).
        api_key: API key for remote specs (ignored for local ones). Default: the provider's environment variable
            (e.g. ``OPENAI_API_KEY``), or a placeholder for servers given by ``api_base``. Never logged or stored here.
        temperature: Overrides the role default.
        max_tokens: Overrides the role default.
        cache: Use DSPy's response cache.
        num_retries: DSPy retries for transient errors. Default: 1 for servers given by ``api_base`` (a dead local
            server fails in about a second), DSPy's 3 for hosted APIs.
        timeout: Seconds per HTTP request (remote specs). Default 120 s for ``api_base`` servers.
        check_connection: With ``api_base``, check now that something listens there (fails fast with a clear error).

    Returns:
        The configured ``dspy.LM``. A server started for ``route="server"`` keeps running until interpreter exit or
        :func:`~fermi_dspy.lm.server.stop_all_servers`; use :func:`open_lm` to scope it.

    Raises:
        LMSpecError: Invalid spec or options, or an unreachable ``api_base``.
        EngineNotInstalledError: A local spec without llama-cpp-python installed.
    """
    import dspy

    parsed = resolve_spec(spec, role=role, local_model=local_model)
    defaults = ROLE_DEFAULTS[role]
    temperature = defaults["temperature"] if temperature is None else temperature
    max_tokens = defaults["max_tokens"] if max_tokens is None else max_tokens
    if parsed.kind == "local":
        if api_base or api_key:
            # One command line may pair a local task LM with a remote proposer; the remote settings are not for us.
            logger.info("api_base/api_key are ignored for the local %s model %s", role, parsed.model)
        logger.info("%s LM: local model %s (%s route)", role, parsed.model, route)
        return local_lm(parsed.model, route=route, max_tokens=max_tokens, temperature=temperature, cache=cache,
                        stop_loops=role_stop_loops(role, route))

    kwargs: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens, "cache": cache}
    if api_base:
        if check_connection:
            _check_reachable(api_base)
        # The LiteLLM engine sends `max_tokens`, which every OpenAI-compatible server honours (DSPy's default engine
        # sends `max_completion_tokens`, which llama-cpp-python's server ignores).
        kwargs.update(api_base=api_base, api_key=api_key or "local", engine="litellm",
                      num_retries=1 if num_retries is None else num_retries, timeout=timeout or 120.0)
    else:
        if api_key:
            kwargs["api_key"] = api_key
        if num_retries is not None:
            kwargs["num_retries"] = num_retries
        if timeout is not None:
            kwargs["timeout"] = timeout
    logger.info("%s LM: %s%s", role, parsed.model, f" at {api_base}" if api_base else "")
    return dspy.LM(parsed.model, **kwargs)


@contextlib.contextmanager
def open_lm(spec: str | None = None, **kwargs: Any) -> Iterator[Any]:
    """:func:`build_lm` as a context manager: a local server it starts is stopped when the block ends.

    Example:
        >>> with open_lm("local:smollm2-135m", route="server") as lm:  # doctest: +SKIP
        ...     dspy.Predict("question -> answer", lm=lm)(question="2+2?")
    """
    route = kwargs.get("route", "inprocess")
    before = set(_SERVERS.values())
    lm = build_lm(spec, **kwargs)
    try:
        yield lm
    finally:
        if route == "server":
            with _SHARED_LOCK:
                started = [(k, s) for k, s in _SERVERS.items() if s not in before]
                for key, _ in started:
                    del _SERVERS[key]
            for _, server in started:
                server.stop()
