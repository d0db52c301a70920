"""The tests' one stub of an OpenAI-compatible server, on 127.0.0.1: it records every request, answers like the
scripted LMs (`tests.scripted`'s rules) or with a fixed reply, and fails on command.

Failures are planned per user tag ("[u3]" in the request) or for the next requests in order: HTTP 429, 500 and 503
(with `Retry-After: 0`, so DSPy's backoff does not slow the tests), "slow" (answers after `slow_seconds`, past a
client's timeout), "401" (an authentication error whose message echoes the Authorization header, as some providers
do) and "echo" (an HTTP 500 whose message echoes every request header). A per-user plan "500x2" fails that user's
first two requests and then answers; `cycle` repeats a pattern over all other requests in order (["500"] * 3 +
["ok"] * 7 fails 30% of them, in bursts of three).

    with StubOpenAIServer() as stub:
        stub.user_failures = {"u2": "503"}
        lm = dspy.LM("openai/stub-model", api_base=stub.api_base, api_key="k")
"""

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fermi_dspy.testing import as_letters, format_chat_fields
from tests.runs.lms import _digest
from tests.scripted import proposal, task_respond

TAG = re.compile(r"\[(u\d+)\]")
#: A reply the ChatAdapter parses for a signature with one output field `answer`.
CHAT_REPLY = "[[ ## answer ## ]]\nB\n\n[[ ## completed ## ]]"

Reply = str | Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def chat_completion(content: str, model: str = "stub", *, prompt_tokens: int = 11) -> dict[str, Any]:
    """An OpenAI `chat.completion` body with one choice."""
    return {"id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 8, "total_tokens": prompt_tokens + 8}}


def scripted_reply(body: dict[str, Any]) -> str:
    """What the scripted LMs would answer to a chat request: a proposal, or the task rule's answer."""
    messages = body.get("messages", [])
    system = "\n".join(m["content"] for m in messages if m.get("role") == "system" and isinstance(m["content"], str))
    user = "\n".join(m["content"] for m in messages if m.get("role") != "system" and isinstance(m["content"], str))
    if "new_prompt" in system:
        return format_chat_fields(proposal(user, _digest(user, body.get("seed")) % 1000))
    last = messages[-1]["content"] if messages and isinstance(messages[-1].get("content"), str) else ""
    return format_chat_fields(as_letters(task_respond(system, user), last))


class StubOpenAIServer:
    """Serves `POST /v1/chat/completions` and `GET /v1/models` on a free port of 127.0.0.1 inside a `with` block.

    Args:
        reply: The assistant text of every answer, or `(request body) -> (status, response body)`; None answers like
            the scripted LMs.

    Attributes:
        requests: Every request body, in order. `headers`: their headers (lower-case names). `outcomes`: what each
            got ("ok", "500", ...).
        next_failures, user_failures, cycle, slow_seconds: the planned failures (see the module docstring).
    """

    def __init__(self, reply: Reply | None = None) -> None:
        self.reply = reply
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.outcomes: list[str] = []
        self.next_failures: list[str] = []
        self.user_failures: dict[str, str] = {}
        self.cycle: list[str] = []
        self.slow_seconds = 2.0
        self._served = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        """`http://127.0.0.1:<port>/v1`."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "StubOpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def count(self, outcome: str | None = None) -> int:
        """Requests served (with this outcome)."""
        with self.lock:
            return sum(1 for o in self.outcomes if outcome is None or o == outcome)

    def plan(self, tag: str) -> str:
        """The outcome of the next request of user `tag`."""
        with self.lock:
            if tag in self.user_failures:
                outcome, _, times = self.user_failures[tag].partition("x")
                if times and int(times) > 1:
                    self.user_failures[tag] = f"{outcome}x{int(times) - 1}"
                elif times:
                    del self.user_failures[tag]
                return outcome
            if self.next_failures:
                return self.next_failures.pop(0)
            if self.cycle:
                self._served += 1
                return self.cycle[(self._served - 1) % len(self.cycle)]
            return "ok"

    def _answer(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        text = json.dumps(body.get("messages", []))
        match = TAG.search(text)
        outcome = self.plan(match.group(1) if match else "?")
        with self.lock:
            self.requests.append(body)
            self.headers.append(headers)
            self.outcomes.append(outcome)
        if outcome == "slow":
            time.sleep(self.slow_seconds)
            outcome = "ok"
        if outcome == "ok":
            if callable(self.reply):
                return (*self.reply(body), {})
            content = scripted_reply(body) if self.reply is None else self.reply
            return 200, chat_completion(content, body.get("model", "stub"), prompt_tokens=len(text) // 4), {}
        if outcome == "401":
            message = f"Incorrect API key provided: {headers.get('authorization')}"
            return 401, {"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}, {}
        if outcome == "echo":
            echoed = "; ".join(f"{key}: {value}" for key, value in headers.items())
            message = f"bad request with headers {echoed}"
            return 500, {"error": {"message": message, "type": "server_error"}}, {"Retry-After": "0"}
        failure = {"error": {"message": f"stub failure {outcome}", "type": "server_error"}}
        return int(outcome), failure, {"Retry-After": "0"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, data: dict[str, Any], headers: dict[str, str]) -> None:
                out = json.dumps(data).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(out)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]}, {})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                self._send(*stub._answer(body, {k.lower(): v for k, v in self.headers.items()}))

        return Handler
