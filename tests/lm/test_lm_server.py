"""LlamaServer process management with a fake server script (offline: no llama.cpp, no model)."""

import os

import pytest

from fermi_dspy.lm import server as server_module
from fermi_dspy.lm.errors import ServerError
from fermi_dspy.lm.server import LlamaServer, stop_all_servers

# Stands in for the launcher: serves GET /v1/models on --port, and ignores SIGTERM if asked to (like llama.cpp's
# server while it is generating).
FAKE_LAUNCHER = """
import http.server, signal, sys
args = sys.argv[3:]
port = int(args[args.index("--port") + 1])
if "--ignore-sigterm" in args:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "--crash" in args:
    print("fake server: cannot load model", flush=True)
    sys.exit(3)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b'{"data": []}')
    def log_message(self, *a):
        pass
print("fake server: ready", flush=True)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


@pytest.fixture
def fake_server(monkeypatch, tmp_path):
    monkeypatch.setattr(server_module, "_LAUNCHER", FAKE_LAUNCHER)
    monkeypatch.setattr(server_module, "import_llama_cpp", lambda: None)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")

    def make(*extra: str, **kwargs) -> LlamaServer:
        return LlamaServer(model, alias="fake", extra_args=extra, **kwargs)

    return make


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_start_answers_and_stop_removes_the_process(fake_server):
    with fake_server() as server:
        assert server.is_running()
        assert server.api_base == f"http://127.0.0.1:{server.port}/v1"
        pid = server.pid
    assert not server.is_running() and server.pid is None
    assert gone(pid)
    server.stop()  # idempotent


def test_a_server_ignoring_sigterm_is_killed(fake_server):
    server = fake_server("--ignore-sigterm", stop_grace=0.5).start()
    pid = server.pid
    server.stop()
    assert gone(pid)


def test_exception_in_the_block_stops_the_server(fake_server):
    server = fake_server()
    with pytest.raises(ValueError, match="inside"), server:
        pid = server.pid
        raise ValueError("inside")
    assert gone(pid)


def test_a_crashing_server_reports_its_log(fake_server):
    server = fake_server("--crash")
    with pytest.raises(ServerError, match="cannot load model") as info:
        server.start()
    assert "exited with status 3" in str(info.value)
    assert not server.is_running()


def test_a_server_that_never_answers_times_out(fake_server, monkeypatch):
    monkeypatch.setattr(server_module, "_LAUNCHER", "import time; time.sleep(60)")
    server = fake_server(startup_timeout=1)
    with pytest.raises(ServerError, match="did not answer"):
        server.start()
    assert not server.is_running()


def test_stop_all_servers(fake_server):
    first, second = fake_server().start(), fake_server().start()
    pids = [first.pid, second.pid]
    stop_all_servers()
    assert all(gone(pid) for pid in pids)


def test_missing_model_and_unstarted_server(tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "import_llama_cpp", lambda: None)
    server = LlamaServer(tmp_path / "missing.gguf", alias="x")
    with pytest.raises(ServerError, match="not been started"):
        _ = server.api_base
    with pytest.raises(ServerError, match="does not exist"):
        server.start()
