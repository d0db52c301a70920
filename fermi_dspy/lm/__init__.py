"""Language models for fermi-dspy: embedded local models (no API key, no network) and any DSPy/LiteLLM model.

Quick start:

    >>> import dspy
    >>> from fermi_dspy.lm import build_lm
    >>> task_lm = build_lm("local")                       # doctest: +SKIP  (Qwen2.5-Coder-0.5B, in-process)
    >>> proposer_lm = build_lm(role="proposer")           # doctest: +SKIP  ($FERMI_PROPOSER_LM / $FERMI_LM / local)
    >>> dspy.configure(lm=task_lm)                        # doctest: +SKIP

Models: ``fermi-dspy models list`` / ``fermi-dspy models fetch qwen2.5-coder-0.5b`` (or ``python -m fermi_dspy.lm``).
"""

from fermi_dspy.lm.config import LMSpec, build_lm, local_lm, open_lm, resolve_spec
from fermi_dspy.lm.errors import (
    ChecksumMismatchError,
    EngineNotInstalledError,
    LMSpecError,
    LocalLMError,
    ModelFetchError,
    ServerError,
    UnknownModelError,
)
from fermi_dspy.lm.llama_engine import LlamaCppEngine
from fermi_dspy.lm.models import DEFAULT_MODEL, MODELS, ModelSpec, ensure_model, resolve_model
from fermi_dspy.lm.server import LlamaServer, server_lm, stop_all_servers

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "ChecksumMismatchError",
    "EngineNotInstalledError",
    "LMSpec",
    "LMSpecError",
    "LlamaCppEngine",
    "LlamaServer",
    "LocalLMError",
    "ModelFetchError",
    "ModelSpec",
    "ServerError",
    "UnknownModelError",
    "build_lm",
    "ensure_model",
    "local_lm",
    "open_lm",
    "resolve_model",
    "resolve_spec",
    "server_lm",
    "stop_all_servers",
]
