"""LM settings that travel to worker processes, and the per-process cache of LMs built from them.

LMs cannot be pickled (a local llama.cpp engine holds a loaded model), so a run ships an `LMConfig` per role, a
small frozen description, to each worker, and each worker process builds its LMs once (`worker_lm`) and gives every
user fresh copies. Spec strings are those of `fermi_dspy.lm.build_lm` ("local", "local:<model>", a .gguf path, or a
DSPy/LiteLLM model string such as "openai/gpt-4o-mini"), plus one more form:

* ``"factory:<module>:<function>"``: an importable function called as ``function(role="task"|"proposer")`` that
  returns a `dspy.BaseLM`. Tests use it to run scripted LMs in subprocesses and Ray workers, and it lets any custom LM
  be used from the command line. The module must be importable in every worker (e.g. through ``PYTHONPATH``).

API keys are `Secret`s: kept in memory and shipped to workers inside the task, never written to the run directory,
its manifest or the logs. An `api_base` with credentials in it (``http://user:password@host/v1``) is refused: the
HTTP client would send them as Basic auth instead of the API key.

Servers given by `api_base` get `SERVER_RETRIES` retries per call by default (local servers under load fail
transiently), and their responses are cached under their endpoint: DSPy's cache key leaves `api_base` out, so two
servers with the same model name would otherwise answer from each other's cache entries.
"""

import importlib
import ipaddress
import logging
import os
import threading
import urllib.parse
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import dspy

from fermi_dspy.runs.redact import register_secret, register_url_credentials

logger = logging.getLogger(__name__)

Role = Literal["task", "proposer"]
FACTORY_PREFIX = "factory:"
_ENV_BY_ROLE = {"task": ("FERMI_LM",), "proposer": ("FERMI_PROPOSER_LM", "FERMI_LM")}

#: Retries of a transient error (timeout, connection error, 429, 5xx) per call to a server given by `api_base`, when
#: `num_retries` is not set. With DSPy's backoff (1, 2, 4, 8, 16 s, or the server's Retry-After) a call survives a
#: burst of 5 failures; at a 30% fault rate 1 call in ~1,400 still fails (its user is recorded as failed and retried
#: on resume). A dead server costs each user about 31 s before it is recorded as failed; lower it with num_retries.
SERVER_RETRIES = 5
#: The header that carries a server's endpoint into DSPy's cache key (and tells the server nothing secret).
ENDPOINT_HEADER = "X-Fermi-Endpoint"


@dataclass(frozen=True)
class Secret:
    """A secret string (an API key) whose repr and str never show it; `reveal()` returns it."""

    value: str = field(repr=False)

    def reveal(self) -> str:
        """The secret value (only for handing it to an LM client)."""
        return self.value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def safe_url(url: str | None, *, loopback_port: bool = True) -> str | None:
    """`url` without user info, query or fragment (where credentials sometimes hide), for the manifest and logs;
    `loopback_port=False` also leaves out the port of a loopback host (see `identity_url`)."""
    if not url:
        return url
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    if parts.port and (loopback_port or not is_loopback(parts.hostname)):
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def is_loopback(host: str | None) -> bool:
    """Whether `host` is this machine: "localhost" or a loopback address (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def identity_url(url: str | None) -> str | None:
    """`url` as part of a run's identity: `safe_url`, without the port when the host is a loopback address.

    A local server (llama.cpp, vLLM, Ollama) is often started on whatever port is free, so a restart on another port
    is the same endpoint; the port of a remote host is kept (another port there may well be another server).
    """
    return safe_url(url, loopback_port=False)


@dataclass(frozen=True)
class LMConfig:
    """How to build one role's LM in any process. Picklable; `describe()` holds no secret.

    Args:
        spec: "local", "local:<model>", a .gguf path, a DSPy/LiteLLM model string, or "factory:<module>:<function>".
            None reads `$FERMI_PROPOSER_LM` (proposer role) / `$FERMI_LM`, else "local"; `resolve` does this once,
            in the driver, so every worker uses the same model.
        api_base: Base URL of an OpenAI-compatible server (remote specs).
        api_key: The API key; prefer `api_key_env`. Never written anywhere.
        api_key_env: Name of the environment variable holding the API key, read in the driver by `resolve`.
        local_model: The embedded model "local" means.
        route: "inprocess" or "server" for local models.
        local_threads: CPU threads of a local in-process engine (default: `fermi_dspy.lm`'s).
        temperature: Overrides the role's default temperature.
        max_tokens: Overrides the role's default completion budget.
        cache: Use DSPy's response cache. A run never needs it to be correct (finished users are read from the run
            directory); with the disk cache on, the calls a killed user had made are replayed for free on resume.
        num_retries: Retries of a transient LM error (timeouts, connection errors, 429 and 5xx), with exponential
            backoff inside DSPy (1 s, 2 s, 4 s, ... or the server's Retry-After). None: `build_lm`'s default.
        timeout: Seconds per HTTP request (remote specs).
    """

    spec: str | None = None
    api_base: str | None = None
    api_key: Secret | None = field(default=None, repr=False)
    api_key_env: str | None = None
    local_model: str | None = None
    route: str = "inprocess"
    local_threads: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    cache: bool = True
    num_retries: int | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        if register_url_credentials(self.api_base):
            raise ValueError(
                f"api_base {safe_url(self.api_base)!r} was given with credentials in it (user:password@): the HTTP "
                "client would send them as Basic auth and the API key not at all. Give the URL without them "
                "(--api-base), put the key in an environment variable and name it with api_key_env "
                "(--api-key-env NAME); it is sent as a Bearer token and never written anywhere."
            )

    @classmethod
    def coerce(cls, value: "str | LMConfig | None") -> "LMConfig":
        """An `LMConfig` from a spec string, an `LMConfig`, or None (the environment's default)."""
        if isinstance(value, LMConfig):
            return value
        if value is None or isinstance(value, str):
            return cls(spec=value)
        raise TypeError(f"an LM must be given as a spec string or an LMConfig, got {type(value).__name__}.")

    @property
    def is_factory(self) -> bool:
        return bool(self.spec) and self.spec.startswith(FACTORY_PREFIX)

    def resolve(self, role: Role, *, default: "LMConfig | None" = None, need_key: bool = True) -> "LMConfig":
        """Fix everything a worker must not decide on its own: the spec (from the environment) and the API key.

        Args:
            role: "task" or "proposer".
            default: The config to inherit from when this one names no spec (the proposer defaults to the task LM).
            need_key: Read the key from `api_key_env` now (False for a dry run, which calls no LM).

        Raises:
            ValueError: `api_key_env` names an unset variable.
        """
        config = self
        if config.spec is None:
            env = next((os.environ[n] for n in _ENV_BY_ROLE[role] if os.environ.get(n)), None)
            if env is None and default is not None:
                if config == LMConfig():
                    return default
                config = replace(config, spec=default.spec, api_base=config.api_base or default.api_base,
                                 api_key=config.api_key or default.api_key,
                                 api_key_env=config.api_key_env or default.api_key_env,
                                 local_model=config.local_model or default.local_model)
            else:
                config = replace(config, spec=env or "local")
        if config.api_key is None and config.api_key_env and need_key:
            value = os.environ.get(config.api_key_env)
            if not value:
                raise ValueError(f"${config.api_key_env} is empty or unset; export the API key there.")
            config = replace(config, api_key=Secret(value))
        if config.api_key is not None:
            register_secret(config.api_key.reveal())
        return config

    def describe(self) -> dict[str, Any]:
        """What this LM is, for the manifest: the settings that change answers. No secrets.

        The port of a loopback `api_base` is left out (see `identity_url`); `execution()` records the one used.
        """
        return {
            "spec": self.spec,
            "api_base": identity_url(self.api_base),
            "local_model": self.local_model,
            "route": self.route,
            "local_threads": self.local_threads,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def execution(self) -> dict[str, Any]:
        """How this LM is called (may change between resumes). No secrets: only whether a key was given."""
        return {
            "api_base": safe_url(self.api_base),
            "cache": self.cache,
            "num_retries": self.num_retries,
            "timeout": self.timeout,
            "api_key_env": self.api_key_env,
            "api_key_given": self.api_key is not None,
        }


def _factory_lm(spec: str, role: Role) -> dspy.BaseLM:
    target = spec[len(FACTORY_PREFIX):]
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{spec!r}: write factory:<module>:<function>, e.g. factory:my_lms:make_lm.")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"{spec!r}: cannot import {attribute} from {module_name} ({exc}); is it on PYTHONPATH?"
        ) from exc
    lm = function(role=role)
    if not isinstance(lm, dspy.BaseLM):
        raise TypeError(f"{spec!r} returned {type(lm).__name__}, not a dspy.BaseLM.")
    return lm


def build_role_lm(config: LMConfig, role: Role) -> dspy.BaseLM:
    """Build the LM for `role` from a resolved config (no caching; see `worker_lm`)."""
    if config.spec is None:
        raise ValueError("LMConfig.spec is None; call LMConfig.resolve(role) in the driver first.")
    api_key = config.api_key.reveal() if config.api_key is not None else None
    register_secret(api_key)  # this may be a worker process that never saw the key
    if config.is_factory:
        return _factory_lm(config.spec, role)
    if config.local_threads is not None:
        from fermi_dspy.lm.config import ROLE_DEFAULTS, local_lm, resolve_spec, role_stop_loops

        parsed = resolve_spec(config.spec, role=role, local_model=config.local_model)
        if parsed.kind == "local":
            defaults = ROLE_DEFAULTS[role]
            return local_lm(
                parsed.model, route=config.route, n_threads=config.local_threads, cache=config.cache,
                max_tokens=defaults["max_tokens"] if config.max_tokens is None else config.max_tokens,
                temperature=defaults["temperature"] if config.temperature is None else config.temperature,
                stop_loops=role_stop_loops(role, config.route),
            )
    from fermi_dspy.lm import build_lm

    num_retries = SERVER_RETRIES if config.num_retries is None and config.api_base else config.num_retries
    lm = build_lm(
        config.spec, role=role, local_model=config.local_model, route=config.route, api_base=config.api_base,
        api_key=api_key, temperature=config.temperature, max_tokens=config.max_tokens, cache=config.cache,
        num_retries=num_retries, timeout=config.timeout, check_connection=False,
    )
    return cache_by_endpoint(lm, config.api_base)


def cache_by_endpoint(lm: dspy.BaseLM, api_base: str | None) -> dspy.BaseLM:
    """Make `api_base` part of DSPy's cache key for `lm`'s calls (DSPy's key leaves it out).

    The endpoint (without credentials) rides in a request header, which DSPy keys on and LiteLLM sends along; servers
    ignore headers they do not know. LMs with their own engine (local models, factories) own their connection and
    are left as they are.
    """
    if api_base and isinstance(getattr(lm, "_engine_spec", "litellm"), str):
        lm.kwargs["headers"] = {**(lm.kwargs.get("headers") or {}), ENDPOINT_HEADER: safe_url(api_base)}
    return lm


_CACHE_LOCK = threading.Lock()
_CACHE: dict[tuple[LMConfig, str], dspy.BaseLM] = {}


def worker_lm(config: LMConfig, role: Role) -> dspy.BaseLM:
    """This process's LM for (config, role), built on first use; callers take `.copy()`s of it."""
    key = (config, role)
    with _CACHE_LOCK:
        lm = _CACHE.get(key)
        if lm is None:
            lm = _CACHE[key] = build_role_lm(config, role)
            logger.debug("Built the %s LM %s in process %d.", role, config.spec, os.getpid())
        return lm


def clear_worker_lms() -> None:
    """Forget this process's cached LMs (tests use it between runs)."""
    with _CACHE_LOCK:
        _CACHE.clear()
