"""OpenAI-compatible local server route: run ``python -m llama_cpp.server`` as a child process.

:class:`LlamaServer` starts the server on a free loopback port, waits until it answers, and always stops it again:
on ``__exit__`` (also after an exception or Ctrl-C inside the ``with`` block), on :meth:`LlamaServer.stop`, at
interpreter exit, and, on Linux, when the parent process dies (``PR_SET_PDEATHSIG``). The server ignores SIGTERM
while it is generating, so stopping escalates to SIGKILL after a short grace period.

DSPy then talks to it exactly as to a hosted endpoint (see :func:`server_lm`).

Example:
    >>> with LlamaServer(ensure_model("smollm2-135m"), alias="smollm2-135m") as server:  # doctest: +SKIP
    ...     lm = server_lm(server)
    ...     dspy.Predict("question -> answer", lm=lm)(question="2+2?")
"""

import atexit
import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fermi_dspy.lm.errors import ServerError
from fermi_dspy.lm.llama_engine import import_llama_cpp

logger = logging.getLogger(__name__)

_LIVE: set["LlamaServer"] = set()
_LIVE_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# Runs in the child: on Linux, ask to be SIGKILLed when the parent dies (PR_SET_PDEATHSIG), then run the server
# module. Done in the fresh child interpreter, not in a preexec_fn, which is unsafe in a multi-threaded parent.
_LAUNCHER = """
import ctypes, os, runpy, signal, sys
parent, pdeathsig = int(sys.argv.pop(1)), sys.argv.pop(1) == "1"
if pdeathsig:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:
        pass
    if os.getppid() != parent:
        sys.exit("parent exited before the server started")
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


class LlamaServer:
    """A ``llama_cpp.server`` child process serving one GGUF model on an OpenAI-compatible API.

    Args:
        model_path: Path of the GGUF file.
        alias: The model name the server answers to (the ``<alias>`` in ``openai/<alias>``).
        host: Listen address. Keep the loopback default unless you mean to expose the model.
        port: Listen port; None picks a free one.
        n_ctx: Context window in tokens.
        n_threads: CPU threads.
        startup_timeout: Seconds to wait for the server to answer before giving up.
        stop_grace: Seconds between SIGTERM and SIGKILL when stopping.
        extra_args: More ``llama_cpp.server`` flags, e.g. ``("--n_batch", "256")``.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        alias: str,
        host: str = "127.0.0.1",
        port: int | None = None,
        n_ctx: int = 4096,
        n_threads: int = 2,
        startup_timeout: float = 120.0,
        stop_grace: float = 3.0,
        extra_args: tuple[str, ...] = (),
    ):
        self.model_path = Path(model_path)
        self.alias = alias
        self.host = host
        self.port = port
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.extra_args = tuple(extra_args)
        self._proc: subprocess.Popen | None = None
        self._log_path: Path | None = None
        self._lock = threading.Lock()

    @property
    def api_base(self) -> str:
        """The OpenAI-compatible base URL, e.g. ``http://127.0.0.1:8123/v1``."""
        if self.port is None:
            raise ServerError("The server has not been started; use `with LlamaServer(...)` or call start().")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The child's process id, or None when not running."""
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The command line used to start the server."""
        return [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path), "--model_alias", self.alias,
            "--host", self.host, "--port", str(self.port), "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads), *self.extra_args,
        ]

    def start(self) -> "LlamaServer":
        """Start the server and wait until it answers.

        Returns:
            self.

        Raises:
            EngineNotInstalledError: llama-cpp-python is not installed.
            ServerError: The server exited or did not answer within ``startup_timeout``; the message includes the end
                of its log. The process is stopped before raising.
        """
        auto_port = self.port is None
        for attempt in range(3):
            self._spawn()
            try:
                self._wait_healthy()
                return self
            except ServerError as exc:
                self.stop()
                # A free port picked by us can be taken by another process before the server binds it: pick again.
                if not (auto_port and attempt < 2 and "address already in use" in str(exc).lower()):
                    raise
                self.port = None
            except BaseException:  # Includes KeyboardInterrupt during startup.
                self.stop()
                raise
        return self

    def _spawn(self) -> None:
        with self._lock:
            if self.is_running():
                return
            import_llama_cpp()  # A clear install hint instead of a child's ModuleNotFoundError.
            if not self.model_path.is_file():
                raise ServerError(f"Model file {self.model_path} does not exist.")
            if self.port is None:
                self.port = free_port(self.host)
            fd, log_name = tempfile.mkstemp(prefix=f"fermi-dspy-server-{self.alias}-", suffix=".log")
            self._log_path = Path(log_name)
            # PDEATHSIG fires when the *thread* that started the child exits, so only the main thread asks for it.
            pdeathsig = sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
            argv = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), "1" if pdeathsig else "0", *self.command()[3:]]
            logger.info("Starting llama.cpp server for %s on %s:%d", self.alias, self.host, self.port)
            try:
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT)
            finally:
                os.close(fd)
            with _LIVE_LOCK:
                _LIVE.add(self)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.api_base}/models"
        while True:
            code = self._proc.poll() if self._proc is not None else -1
            if code is not None:
                raise ServerError(
                    f"The llama.cpp server for {self.alias} exited with status {code} during startup. "
                    f"Command: {' '.join(self.command())}\nLast lines of its log:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        logger.info("llama.cpp server for %s is ready at %s", self.alias, self.api_base)
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServerError(
                    f"The llama.cpp server for {self.alias} did not answer at {url} "
                    f"within {self.startup_timeout:.0f} s. "
                    f"Last lines of its log:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's combined stdout/stderr."""
        if self._log_path is None:
            return "(no log)"
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return "(log unavailable)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``stop_grace`` seconds. Safe to call more than once."""
        with self._lock:
            proc, self._proc = self._proc, None
            with _LIVE_LOCK:
                _LIVE.discard(self)
            if proc is None:
                return
            try:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                logger.info("llama.cpp server %s ignored SIGTERM; sending SIGKILL", self.alias)
            finally:  # Also on Ctrl-C while waiting: never leave the server behind.
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            logger.info("Stopped llama.cpp server for %s (pid %d)", self.alias, proc.pid)
            if self._log_path is not None:
                with contextlib.suppress(OSError):
                    self._log_path.unlink()
                self._log_path = None

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self._proc is not None:
                self.stop()

    def __repr__(self) -> str:
        state = f"running pid={self.pid} at {self.api_base}" if self.is_running() else "stopped"
        return f"LlamaServer({self.alias!r}, {state})"


def stop_all_servers() -> None:
    """Stop every :class:`LlamaServer` still running in this process (also run at interpreter exit)."""
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        server.stop()


atexit.register(stop_all_servers)


def server_lm(
    server: LlamaServer,
    *,
    max_tokens: int = 512,
    temperature: float | None = 0.0,
    cache: bool = True,
    num_retries: int = 1,
    timeout: float = 120.0,
    **kwargs: Any,
) -> Any:
    """A ``dspy.LM`` that talks to a running :class:`LlamaServer` like to any OpenAI-compatible endpoint.

    It uses DSPy's LiteLLM engine, which sends ``max_tokens`` (DSPy's default engine sends ``max_completion_tokens``,
    which llama-cpp-python's server ignores).

    Args:
        server: A started server.
        max_tokens: Completion budget per call.
        temperature: Sampling temperature (None = the server's default).
        cache: Use DSPy's response cache.
        num_retries: DSPy retries for transient errors (connection errors, HTTP 5xx).
        timeout: Seconds per HTTP request.
        **kwargs: More ``dspy.LM`` keyword arguments.

    Returns:
        The configured ``dspy.LM`` (model ``openai/<alias>``).
    """
    import dspy

    return dspy.LM(
        f"openai/{server.alias}", api_base=server.api_base, api_key="local", engine="litellm", max_tokens=max_tokens,
        temperature=temperature, cache=cache, num_retries=num_retries, timeout=timeout, **kwargs,
    )
