"""Fixtures for the local-LM tests: the tests' stub OpenAI server (`tests.stub_server`) and the real smallest
model."""

import importlib.util
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from tests.stub_server import CHAT_REPLY, StubOpenAIServer

SMALLEST_MODEL = "smollm2-135m"


@pytest.fixture
def stub_server() -> Iterator[StubOpenAIServer]:
    """A stub that answers every chat completion with :data:`CHAT_REPLY`."""
    with StubOpenAIServer(CHAT_REPLY) as server:
        yield server


@pytest.fixture
def failing_server() -> Iterator[StubOpenAIServer]:
    """A stub that answers every chat completion with HTTP 500."""
    with StubOpenAIServer(lambda body: (500, {"error": {"message": "stub exploded", "type": "server_error"}})) as s:
        yield s


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel completes the handshake) but never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def dead_port() -> int:
    """A port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def has_llama_cpp() -> bool:
    """True if llama-cpp-python is installed."""
    return importlib.util.find_spec("llama_cpp") is not None


@pytest.fixture(scope="session")
def smallest_model_path() -> Path:
    """The verified SmolLM2-135M GGUF (fetched on first use); skips if the engine or the model is unavailable."""
    if not has_llama_cpp():
        pytest.skip("llama-cpp-python is not installed: pip install 'fermi-dspy[local]'")
    from fermi_dspy.lm.errors import ModelFetchError
    from fermi_dspy.lm.models import ensure_model

    try:
        return ensure_model(SMALLEST_MODEL)
    except ModelFetchError as exc:
        pytest.skip(f"{SMALLEST_MODEL} is not available: {exc}")
