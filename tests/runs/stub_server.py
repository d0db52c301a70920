"""A loopback OpenAI-compatible chat server for fault tests: it answers like the scripted LMs and fails on command.

Failures are planned per user tag ("[u3]" in the request) or for the next requests in order: HTTP 429, 500 and 503
(with `Retry-After: 0`, so DSPy's backoff does not slow the tests), "slow" (answers after the client's timeout) and
"401" (an authentication error whose message echoes the Authorization header, as some providers do), and "echo" (an
HTTP 500 whose message echoes every request header). A per-user plan "500x2" fails that user's first two requests and
then answers; `cycle` repeats a pattern over all other requests in order (["500"] * 3 + ["ok"] * 7 fails 30% of them,
in bursts of three). It listens on 127.0.0.1 only and serves until closed.
"""

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fermi_dspy.testing import as_letters, format_chat_fields
from tests.runs.lms import QUESTION, proposal, task_answer

TAG = re.compile(r"\[(u\d+)\]")


class StubState:
    """What the stub has seen, and the failures it still has to serve."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_failures: list[str] = []
        self.user_failures: dict[str, str] = {}
        self.requests: list[dict[str, Any]] = []
        self.cycle: list[str] = []
        self.slow_seconds = 2.0
        self._served = 0

    def plan(self, tag: str) -> str:
        with self.lock:
            if tag in self.user_failures:
                outcome, _, times = self.user_failures[tag].partition("x")
                if times:
                    left = int(times) - 1
                    if left > 0:
                        self.user_failures[tag] = f"{outcome}x{left}"
                    else:
                        del self.user_failures[tag]
                return outcome
            if self.next_failures:
                return self.next_failures.pop(0)
            if self.cycle:
                self._served += 1
                return self.cycle[(self._served - 1) % len(self.cycle)]
            return "ok"

    def count(self, outcome: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if outcome is None or r["outcome"] == outcome)


def _reply(body: dict[str, Any]) -> str:
    messages = body.get("messages", [])
    system = "\n".join(m["content"] for m in messages if m.get("role") == "system" and isinstance(m["content"], str))
    user = "\n".join(m["content"] for m in messages if m.get("role") != "system" and isinstance(m["content"], str))
    if "new_prompt" in system:
        return format_chat_fields(proposal(system, user, body.get("seed")))
    last = messages[-1]["content"] if messages and isinstance(messages[-1].get("content"), str) else ""
    return format_chat_fields(as_letters(task_answer(system, user), last))


def _handler(state: StubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            out = json.dumps(data).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(out)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            text = json.dumps(body.get("messages", []))
            match = TAG.search(text)
            tag = match.group(1) if match else "?"
            outcome = state.plan(tag)
            with state.lock:
                state.requests.append({"tag": tag, "outcome": outcome, "authorization": self.headers.get(
                    "Authorization"), "model": body.get("model")})
            if outcome == "slow":
                time.sleep(state.slow_seconds)
                outcome = "ok"
            if outcome == "ok":
                self._send(200, {
                    "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": _reply(body)},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": len(text) // 4, "completion_tokens": 8,
                              "total_tokens": len(text) // 4 + 8},
                })
            elif outcome == "401":
                echoed = f"Incorrect API key provided: {self.headers.get('Authorization')}"
                self._send(401, {"error": {"message": echoed, "type": "invalid_request_error",
                                           "code": "invalid_api_key"}})
            elif outcome == "echo":
                echoed = "; ".join(f"{key}: {value}" for key, value in self.headers.items())
                self._send(500, {"error": {"message": f"bad request with headers {echoed}", "type": "server_error"}},
                           {"Retry-After": "0"})
            else:
                code = int(outcome)
                self._send(code, {"error": {"message": f"stub failure {code}", "type": "server_error"}},
                           {"Retry-After": "0"})

    return Handler


@contextmanager
def stub_server() -> Iterator[tuple[str, StubState]]:
    """Serve on 127.0.0.1 (a free port) for the block; yields (api_base, state)."""
    state = StubState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", state
    finally:
        server.shutdown()
        server.server_close()


__all__ = ["QUESTION", "StubState", "stub_server"]
