"""Errors raised by the local LM layer.

Every error names what went wrong and the command or setting that fixes it. They all derive from
:class:`LocalLMError`, so callers can catch one type (itself a `fermi_dspy.FermiError`).
"""

from fermi_dspy.errors import FermiError

#: The command that downloads and verifies an embedded model. Kept in one place so error messages agree.
FETCH_COMMAND = "fermi-dspy models fetch {name}"

#: The command that installs the in-process engine (llama.cpp bindings and their OpenAI-compatible server).
INSTALL_LOCAL_COMMAND = "pip install 'fermi-dspy[local]'"


class LocalLMError(FermiError, RuntimeError):
    """Base class for every error of :mod:`fermi_dspy.lm`."""


class UnknownModelError(LocalLMError, ValueError):
    """A model name is neither in the registry nor an existing GGUF file."""


class ModelFetchError(LocalLMError):
    """Downloading the packages that carry a model failed."""


class ChecksumMismatchError(LocalLMError):
    """An assembled model file does not have the pinned size or sha256. The file has been deleted."""


class EngineNotInstalledError(LocalLMError, ImportError):
    """``llama_cpp`` (llama-cpp-python) is not importable."""


class ServerError(LocalLMError):
    """A local OpenAI-compatible server could not be started or died."""


class LMSpecError(LocalLMError, ValueError):
    """An LM specification string or its options are invalid."""
