"""Resume: finished users are never run (or paid) again, interrupted users restart cleanly, results are identical."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fermi_dspy.runs import ManifestMismatchError, RunError, RunLockedError, personalize_users
from fermi_dspy.runs.cli import build_parser, main
from fermi_dspy.runs.layout import RunDir
from tests.runs import lms
from tests.runs.conftest import REPO, run_kwargs, user_results

CALLS_PER_USER = 27  # at most: 2 iterations x 2 candidates x 5 scored answers + 3 proposals + 4 test answers


def finished(run_dir: Path) -> set[str]:
    return {json.loads(p.read_text())["user_id"] for p in (run_dir / "users").glob("*/result.json")}


def test_crash_mid_run_then_resume_gives_identical_results_and_never_repays_finished_users(users_file, tmp_path):
    data = users_file(8)
    reference = personalize_users("hwang", data_path=data, run_dir=tmp_path / "reference", **run_kwargs(max_workers=2))
    assert reference.done == 8
    expected = user_results(tmp_path / "reference")

    lms.reset()
    lms.CRASH_AT["call"] = 3 * CALLS_PER_USER + 10  # in the middle of the second pair of users
    crashed = tmp_path / "crashed"
    with pytest.raises(lms.SimulatedCrash):
        personalize_users("hwang", data_path=data, run_dir=crashed, **run_kwargs(max_workers=2))
    before = finished(crashed)
    assert 1 <= len(before) < 8
    assert json.loads((crashed / "summary.json").read_text())["status"] == "interrupted"

    lms.reset()
    resumed = personalize_users("hwang", data_path=data, run_dir=crashed, **run_kwargs(max_workers=2))
    assert resumed.done == 8 and resumed.already_done == len(before) and resumed.status == "completed"
    assert user_results(crashed) == expected
    calls = lms.calls_by_user()
    assert not any(calls[f"u{user.split('-')[1]}"] for user in before), "a finished user was run again"
    for user_id, result in expected.items():
        tag = f"u{user_id.split('-')[1]}"
        assert calls[tag] == (0 if user_id in before else result["usage"]["calls"])


def test_resuming_a_finished_run_makes_no_lm_call(users_file, tmp_path):
    data = users_file(4)
    first = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **run_kwargs())
    lms.reset()
    again = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **run_kwargs())
    assert again.done == 4 and again.already_done == 4 and again.this_invocation["users_run"] == 0
    assert sum(lms.calls_by_user().values()) == 0
    assert again.usage == first.usage


def test_results_do_not_depend_on_workers_or_threads(users_file, tmp_path):
    data = users_file(5)
    personalize_users("hwang", data_path=data, run_dir=tmp_path / "one", **run_kwargs(max_workers=1))
    personalize_users("hwang", data_path=data, run_dir=tmp_path / "many", **run_kwargs(max_workers=3, num_threads=3))
    assert user_results(tmp_path / "one") == user_results(tmp_path / "many")


def test_more_users_on_resume_runs_only_the_new_ones(users_file, tmp_path):
    data = users_file(5)
    personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", limit=2, **run_kwargs())
    lms.reset()
    summary = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", limit=5, **run_kwargs())
    assert summary.done == 5 and summary.already_done == 2
    assert set(lms.calls_by_user()) == {"u3", "u4", "u5"}


def test_resume_with_other_settings_is_refused_with_the_differences(users_file, tmp_path):
    data = users_file(2)
    personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **run_kwargs())
    changed = run_kwargs(fermi={**lms.FERMI, "num_iterations": 3}, seed=1)
    with pytest.raises(ManifestMismatchError) as error:
        personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **changed)
    message = str(error.value)
    assert "job.fermi.num_iterations: 2 -> 3" in message and "seed: 0 -> 1" in message
    assert "new run directory" in message
    with pytest.raises(ManifestMismatchError, match=r"lms\.task\.spec"):
        personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **run_kwargs(task_lm=lms.GARBLED_TASK))
    with pytest.raises(RunError, match="already holds a run"):
        personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **run_kwargs(resume=False))


def test_resume_with_changed_profiles_compiles_the_changed_users_afresh(users_file, tmp_path):
    data = users_file(3)
    personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **run_kwargs())
    data.write_text(data.read_text().replace("Independent", "Republican"))  # users 1 and 3
    summary = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **run_kwargs())
    assert summary.done == 3 and summary.this_invocation["users_run"] == 2
    for user in ("synthetic-1", "synthetic-3"):
        update = RunDir(tmp_path / "run").read_result(user)["result"]["update"]
        assert update["mode"] == "fresh" and "another profile" in update["reason"]
    assert "update" not in RunDir(tmp_path / "run").read_result("synthetic-2")["result"]


def test_execution_settings_may_change_on_resume(users_file, tmp_path):
    data = users_file(3)
    personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", limit=1, **run_kwargs())
    summary = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run",
                                **run_kwargs(max_workers=3, num_threads=2, max_calls_per_run=1000))
    assert summary.done == 3
    starts = [e for e in RunDir(tmp_path / "run").events() if e["event"] == "run_started"]
    assert [s["execution"]["max_workers"] for s in starts] == [None, 3]


def test_a_locked_run_directory_is_refused(users_file, tmp_path):
    data = users_file(1)
    with RunDir(tmp_path / "run").locked(), pytest.raises(RunLockedError, match="being run by pid"):
        personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **run_kwargs())


def _cli_args(data: Path, run_dir: Path) -> list[str]:
    return ["--data", "hwang", "--data-path", str(data), "--run-dir", str(run_dir), "--lm", lms.TASK,
            "--proposer-lm", lms.PROPOSER, "--train", "6", "--test", "4", "--iterations", "2", "--candidates", "2",
            "--workers", "2", "--no-progress", "--log", "warning"]


def test_sigkill_of_a_real_run_then_resume_gives_the_uninterrupted_results(users_file, tmp_path):
    data = users_file(8)
    assert main(build_parser().parse_args(_cli_args(data, tmp_path / "reference"))) == 0
    expected = user_results(tmp_path / "reference")

    run_dir, call_log = tmp_path / "killed", tmp_path / "calls.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FERMI_TEST_LM_DELAY": "0.03", "FERMI_TEST_CALL_LOG": str(call_log)}
    command = [sys.executable, "-m", "fermi_dspy.runs", *_cli_args(data, run_dir)]
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(list(run_dir.glob("users/*/result.json"))) < 2 and process.poll() is None:
        assert time.monotonic() < deadline, "the run never finished two users"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    before = finished(run_dir)
    assert 2 <= len(before) < 8
    stamps = {p: p.stat().st_mtime_ns for p in run_dir.glob("users/*/result.json")}

    call_log.write_text("")
    resumed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert user_results(run_dir) == expected
    rerun_tags = {line.split()[1] for line in call_log.read_text().splitlines()}
    assert not rerun_tags & {f"u{user.split('-')[1]}" for user in before}
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    assert "8 done" in resumed.stdout


def test_sigterm_stops_the_run_gracefully_and_it_resumes(users_file, tmp_path):
    data, run_dir = users_file(6), tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FERMI_TEST_LM_DELAY": "0.03"}
    command = [sys.executable, "-m", "fermi_dspy.runs", *_cli_args(data, run_dir)]
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 300
    while not list(run_dir.glob("users/*/result.json")) and process.poll() is None:
        assert time.monotonic() < deadline, "the run never finished a user"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130 and "re-run the same command to resume" in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 1 <= summary["done"] < 6
    resumed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and "6 done" in resumed.stdout
