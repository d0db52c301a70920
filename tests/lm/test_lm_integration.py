"""The real smallest model (SmolLM2-135M) in-process and behind the local server. Run with ``-m integration``."""

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Literal

import dspy
import pytest

from fermi_dspy.lm.config import local_lm, open_lm
from fermi_dspy.lm.errors import ServerError
from fermi_dspy.lm.server import LlamaServer, server_lm

pytestmark = pytest.mark.integration

SMALLEST_MODEL = "smollm2-135m"
HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


class Choice(dspy.Signature):
    """Answer the multiple-choice question with the letter of the best option."""

    question: str = dspy.InputField()
    options: list[str] = dspy.InputField()
    answer: Literal["A", "B", "C"] = dspy.OutputField()
    confidence: int = dspy.OutputField(desc="0 to 100")


QUESTION = {"question": "Which of these is a fruit?", "options": ["A. car", "B. apple", "C. rock"]}


def process_gone(pid: int) -> bool:
    """True once ``pid`` no longer exists (or is only a zombie waiting for its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def wait_gone(pid: int, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.1)
    return process_gone(pid)


@pytest.fixture(scope="module")
def inprocess_lm(smallest_model_path):
    # One thread: the tests stay quick even when other processes keep the cores busy.
    return local_lm(smallest_model_path, max_tokens=96, temperature=0.0, cache=False, n_threads=1)


@pytest.mark.parametrize("adapter", [dspy.ChatAdapter(use_json_adapter_fallback=False), dspy.JSONAdapter()],
                         ids=["ChatAdapter", "JSONAdapter"])
def test_inprocess_predict_parses(inprocess_lm, adapter):
    with dspy.context(lm=inprocess_lm, adapter=adapter):
        pred = dspy.Predict(Choice)(**QUESTION)
    assert pred.answer in {"A", "B", "C"}
    assert isinstance(pred.confidence, int)
    usage = inprocess_lm.history[-1]["usage"]
    assert usage["prompt_tokens"] > 50 and usage["completion_tokens"] > 0


def test_inprocess_default_chat_adapter_free_text(inprocess_lm):
    with dspy.context(lm=inprocess_lm):
        pred = dspy.Predict("question -> answer")(question="What is the capital of France?")
    assert isinstance(pred.answer, str) and pred.answer.strip()
    assert "[[" not in pred.answer


def test_server_route_and_the_server_is_gone_afterwards(smallest_model_path):
    with LlamaServer(smallest_model_path, alias=SMALLEST_MODEL, n_threads=1) as server:
        pid = server.pid
        lm = server_lm(server, max_tokens=64, cache=False)
        with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
            pred = dspy.Predict("question -> answer")(question="What is 2 + 2?")
        assert isinstance(pred.answer, str)
        assert lm.history[-1]["usage"]["prompt_tokens"] > 0
    assert not server.is_running()
    assert wait_gone(pid)


def test_server_is_stopped_after_an_exception_in_the_block(smallest_model_path):
    server = LlamaServer(smallest_model_path, alias=SMALLEST_MODEL, n_threads=1)
    with pytest.raises(RuntimeError, match="boom"), server:
        pid = server.pid
        raise RuntimeError("boom")
    assert wait_gone(pid)


def test_server_is_stopped_after_ctrl_c_in_the_block(smallest_model_path):
    server = LlamaServer(smallest_model_path, alias=SMALLEST_MODEL, n_threads=1)
    with pytest.raises(KeyboardInterrupt), server:
        pid = server.pid
        raise KeyboardInterrupt
    assert wait_gone(pid)


def test_open_lm_stops_the_server_it_started(smallest_model_path, monkeypatch):
    monkeypatch.setenv("FERMI_DSPY_THREADS", "1")
    with open_lm(f"local:{smallest_model_path}", route="server", cache=False, max_tokens=32) as lm:
        lm("Say hi")
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _is_server(int(p), smallest_model_path)]
        assert pids
    assert all(wait_gone(pid) for pid in pids)


def _is_server(pid: int, model: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"llama_cpp.server" in arg for arg in cmdline) and str(model).encode() in cmdline


CHILD = textwrap.dedent(
    """
    import sys, time
    from fermi_dspy.lm.server import LlamaServer
    server = LlamaServer(sys.argv[1], alias="child", n_threads=1).start()
    print(server.pid, flush=True)
    if sys.argv[2] == "hang":
        time.sleep(600)
    """
)


@pytest.mark.parametrize("how", ["exit", "killed"])
def test_server_dies_with_its_parent(smallest_model_path, how):
    """Interpreter exit stops the server (atexit); a SIGKILLed parent takes it along (PR_SET_PDEATHSIG)."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(smallest_model_path), "hang" if how == "killed" else ""],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        server_pid = int(child.stdout.readline())
        if how == "killed":
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        assert wait_gone(server_pid)
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="needs llama-cpp-python")
def test_a_server_that_cannot_start_reports_its_log(tmp_path):
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"this is not a gguf file")
    server = LlamaServer(bogus, alias="bogus", startup_timeout=60)
    with pytest.raises(ServerError, match="exited with status") as info:
        server.start()
    assert "Last lines of its log" in str(info.value)
    assert not server.is_running()
