"""Interrupted attempts are paid for: the LM calls of an attempt that was stopped (SIGTERM), killed (SIGKILL) or
crashed are persisted as they happen and charged to the user's and the run's caps on resume, so the caps hold across
any sequence of kills."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from fermi_dspy.runs import personalize_users
from tests.runs import lms
from tests.runs.conftest import REPO, run_kwargs

CAP = 27  # a user's most calls: 2 iterations x 2 candidates x 5 scored answers + 3 proposals + 4 test answers


def _args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fermi_dspy.runs", "--data", "hwang", "--data-path", str(data), "--run-dir",
            str(run_dir), "--lm", lms.TASK, "--proposer-lm", lms.PROPOSER, "--train", "6", "--test", "4",
            "--iterations", "2", "--candidates", "2", "--no-progress", "--log", "warning", *extra]


def _logged(call_log: Path) -> Counter[str]:
    try:
        return Counter(line.split()[1] for line in call_log.read_text().splitlines() if line.strip())
    except FileNotFoundError:
        return Counter()


def _kill_when(command: list[str], env: dict[str, str], call_log: Path, tag: str, calls: int, sig: int) -> int:
    """Start the run, send `sig` once user `tag` has made `calls` calls (over all attempts), wait; return the code."""
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while _logged(call_log)[tag] < calls and process.poll() is None:
            assert time.monotonic() < deadline, f"user {tag} never reached {calls} calls"
            time.sleep(0.01)
        assert process.poll() is None, "the run ended before it could be stopped"
        process.send_signal(sig)
        return process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_crashed_attempts_calls_count_against_the_users_cap(users_file, tmp_path):
    data, run_dir = users_file(3), tmp_path / "run"
    lms.CRASH_AT["call"] = CAP + 15  # about the second user's 15th call
    with pytest.raises(lms.SimulatedCrash):
        personalize_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs(max_calls_per_user=CAP))
    spent = lms.calls_by_user()["u2"]
    assert spent >= 10 and not (run_dir / "users" / "synthetic-2" / "result.json").exists()
    lms.CRASH_AT["call"] = None
    summary = personalize_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs(max_calls_per_user=CAP))
    calls = lms.calls_by_user()  # both invocations: this process recorded every call
    assert summary.done == 3
    assert all(calls[tag] <= CAP for tag in ("u1", "u2", "u3")), calls
    assert summary.usage["calls"] == sum(calls.values())
    result = json.loads((run_dir / "users" / "synthetic-2" / "result.json").read_text())
    assert result["budget"]["calls_in_failed_attempts"] == spent and result["attempts"] == 2
    assert result["usage"]["calls"] + spent == calls["u2"]


def test_sigterm_mid_user_then_resume_holds_the_per_user_cap(users_file, tmp_path):
    data, run_dir, call_log = users_file(3), tmp_path / "run", tmp_path / "calls.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FERMI_TEST_LM_DELAY": "0.02", "FERMI_TEST_CALL_LOG": str(call_log)}
    command = _args(data, run_dir, "--max-calls-per-user", str(CAP))
    assert _kill_when(command, env, call_log, "u2", 15, signal.SIGTERM) == 130
    interrupted = json.loads((run_dir / "summary.json").read_text())
    assert interrupted["usage"]["calls"] == sum(_logged(call_log).values())  # the stopped attempt is counted

    resumed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    served = _logged(call_log)
    assert all(served[tag] <= CAP for tag in ("u1", "u2", "u3")), served
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["done"] == 3 and summary["usage"]["calls"] == sum(served.values())


def test_caps_hold_across_any_sequence_of_kills(users_file, tmp_path):
    data, run_dir, call_log = users_file(3), tmp_path / "run", tmp_path / "calls.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FERMI_TEST_LM_DELAY": "0.02", "FERMI_TEST_CALL_LOG": str(call_log)}
    run_cap = 3 * CAP - 5
    command = _args(data, run_dir, "--max-calls-per-user", str(CAP), "--max-calls", str(run_cap))
    kills = [("u1", 8, signal.SIGKILL), ("u2", 12, signal.SIGKILL), ("u2", 20, signal.SIGTERM),
             ("u3", 4, signal.SIGKILL)]
    for tag, calls, sig in kills:
        _kill_when(command, env, call_log, tag, calls, sig)
    final = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert final.returncode in (0, 3), final.stdout + final.stderr
    served = _logged(call_log)
    assert all(served[tag] <= CAP for tag in ("u1", "u2", "u3")), served
    assert sum(served.values()) <= run_cap
    summary = json.loads((run_dir / "summary.json").read_text())
    sigkills = sum(1 for *_, sig in kills if sig == signal.SIGKILL)
    # every call the servers saw is charged; a SIGKILL between charging a call and sending it may charge one unsent
    assert sum(served.values()) <= summary["usage"]["calls"] <= sum(served.values()) + sigkills
    assert summary["usage"]["calls"] <= run_cap


def test_the_benchmark_command_stops_on_sigterm_like_ctrl_c(users_file, tmp_path):
    """Every `fermi-dspy` command, not only `personalize`, treats SIGTERM as Ctrl-C: the finished users stay, the
    run's summary is written, the exit code is 130, and the same command resumes."""
    data, run_dir, call_log = users_file(3), tmp_path / "bench", tmp_path / "calls.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FERMI_TEST_LM_DELAY": "0.02", "FERMI_TEST_CALL_LOG": str(call_log)}
    command = [sys.executable, "-m", "fermi_dspy", "bench", "run", "--data", "hwang", "--data-path", str(data),
               "--users", "3", "--user-sample", "first", "--train", "6", "--test", "4", "--iterations", "2",
               "--candidates", "2", "--methods", "zero_shot,fermi", "--lm", lms.TASK, "--proposer-lm", lms.PROPOSER,
               "--out", str(run_dir)]
    assert _kill_when(command, env, call_log, "u2", 5, signal.SIGTERM) == 130
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["done"] == 1 and summary["status"] == "interrupted"

    resumed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads((run_dir / "summary.json").read_text())["done"] == 3
