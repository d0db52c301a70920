"""Fixtures for the local-LM tests: a loopback OpenAI-compatible stub server and the real smallest model."""

import importlib.util
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

#: A reply the ChatAdapter parses for a signature with one output field ``answer``.
CHAT_REPLY = "[[ ## answer ## ]]\nB\n\n[[ ## completed ## ]]"

SMALLEST_MODEL = "smollm2-135m"


def chat_completion(content: str, model: str = "stub") -> dict[str, Any]:
    """An OpenAI ``chat.completion`` body with one choice."""
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


Reply = str | Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


class StubOpenAIServer:
    """Serves ``POST /v1/chat/completions`` and ``GET /v1/models`` on 127.0.0.1 and records every request.

    Args:
        reply: The assistant text, or a callable ``(request_body) -> (status, response_body)``.
    """

    def __init__(self, reply: Reply = CHAT_REPLY):
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                stub.requests.append(body)
                stub.headers.append({k.lower(): v for k, v in self.headers.items()})
                if callable(stub.reply):
                    status, payload = stub.reply(body)
                else:
                    status, payload = 200, chat_completion(stub.reply, body.get("model", "stub"))
                self._send(status, payload)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        """``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "StubOpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def stub_server() -> Iterator[StubOpenAIServer]:
    """A stub that answers every chat completion with :data:`CHAT_REPLY`."""
    with StubOpenAIServer() as server:
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
