"""The `personalize` command: dry run, run, resume, exit statuses, secrets."""

import argparse
import json

import pytest

from fermi_dspy.runs.cli import EXIT_INCOMPLETE, EXIT_OK, EXIT_REFUSED, add_arguments, build_parser, main
from tests.runs import lms
from tests.runs.test_bad_records import bad_lines
from tests.stub_server import StubOpenAIServer

FAKE_KEY = "sk-fake-CLIKEY-0123456789abcdef"


def args(data, run_dir, *extra: str) -> argparse.Namespace:
    return build_parser().parse_args([
        "--data", "hwang", "--data-path", str(data), "--run-dir", str(run_dir), "--lm", lms.TASK, "--proposer-lm",
        lms.PROPOSER, "--train", "6", "--test", "4", "--iterations", "2", "--candidates", "2", "--no-progress",
        *extra])


def test_add_arguments_mounts_on_any_parser():
    parser = argparse.ArgumentParser(prog="fermi-dspy")
    sub = parser.add_subparsers(dest="command")
    add_arguments(sub.add_parser("personalize"))
    parsed = parser.parse_args(["personalize", "--run-dir", "x", "--engine", "ray", "--max-calls", "10"])
    assert (parsed.command, parsed.engine, parsed.max_calls, parsed.data) == ("personalize", "ray", 10, "panelists")


def test_dry_run_prints_the_estimate_and_spends_nothing(users_file, tmp_path, capsys):
    assert main(args(users_file(4), tmp_path / "run", "--dry-run", "--max-calls-per-user", "20")) == EXIT_OK
    out = capsys.readouterr().out
    assert "Dry run (nothing spent)" in out and "Users to run: 4" in out and "LM calls: at most 80" in out
    assert "Tokens: about" in out and "no price known" in out
    assert not (tmp_path / "run").exists() and sum(lms.calls_by_user().values()) == 0


def test_dry_run_of_a_started_run_counts_only_what_is_left(users_file, tmp_path, capsys):
    data = users_file(4)
    assert main(args(data, tmp_path / "run", "--users", "3")) == EXIT_OK
    capsys.readouterr()
    assert main(args(data, tmp_path / "run", "--dry-run")) == EXIT_OK
    assert "Users to run: 1" in capsys.readouterr().out


def test_run_then_resume(users_file, tmp_path, capsys):
    data = users_file(3)
    assert main(args(data, tmp_path / "run", "--workers", "2")) == EXIT_OK
    assert "3 done" in capsys.readouterr().out
    lms.reset()
    assert main(args(data, tmp_path / "run", "--workers", "2")) == EXIT_OK
    assert "3 already done" in capsys.readouterr().out and not lms.calls_by_user()


def test_bad_records_refuse_with_exit_1(users_file, tmp_path, capsys):
    assert main(args(users_file(2, extra_lines=bad_lines()), tmp_path / "run")) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "error: 5 bad record(s)" in err and "users-2.jsonl:3: malformed JSON" in err
    assert "--on-bad-record skip" in err


def test_changed_settings_refuse_with_exit_1(users_file, tmp_path, capsys):
    data = users_file(1)
    assert main(args(data, tmp_path / "run")) == EXIT_OK
    assert main(args(data, tmp_path / "run", "--seed", "3")) == EXIT_REFUSED
    assert "seed: 0 -> 3" in capsys.readouterr().err


def test_failed_users_exit_3_and_the_key_is_never_printed(users_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLI_TEST_KEY", FAKE_KEY)
    with StubOpenAIServer() as stub:
        api_base = stub.api_base
        stub.user_failures = {"u1": "401"}
        status = main(build_parser().parse_args([
            "--data", "hwang", "--data-path", str(users_file(2)), "--run-dir", str(tmp_path / "run"),
            "--lm", "openai/gpt-4o-mini", "--api-base", api_base, "--api-key-env", "CLI_TEST_KEY", "--num-retries",
            "0", "--train", "6", "--test", "4", "--iterations", "1", "--candidates", "2", "--no-progress"]))
    assert status == EXIT_INCOMPLETE
    captured = capsys.readouterr()
    assert "synthetic-1: LMAuthError" in captured.out
    assert FAKE_KEY not in captured.out + captured.err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["execution"]["lms"]["task"] == {"api_base": api_base, "cache": True, "num_retries": 0,
                                                    "timeout": None, "api_key_env": "CLI_TEST_KEY",
                                                    "api_key_given": True}


def test_a_missing_key_variable_is_refused(users_file, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CLI_MISSING_KEY", raising=False)
    status = main(args(users_file(1), tmp_path / "run", "--api-key-env", "CLI_MISSING_KEY"))
    assert status == EXIT_REFUSED and "$CLI_MISSING_KEY is empty or unset" in capsys.readouterr().err


@pytest.mark.parametrize("spec, message", [
    ("factory:nowhere", "factory:<module>:<function>"),
    ("factory:tests.runs.nothing:lm", "cannot import"),
])
def test_bad_factory_specs_fail_the_users_with_a_clear_reason(users_file, tmp_path, capsys, spec, message):
    assert main(args(users_file(1), tmp_path / "run", "--lm", spec)) == EXIT_INCOMPLETE
    assert message in capsys.readouterr().out


def test_the_readmes_many_user_dry_run_runs_as_written_on_the_shipped_data(tmp_path, capsys, monkeypatch):
    from fermi_dspy.data import DataNotFoundError, default_data_dir

    try:
        default_data_dir()
    except DataNotFoundError as exc:
        pytest.skip(f"real data not available: {exc}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FERMI_LM", raising=False)
    command = "--data hwang --users 100 --run-dir runs/hwang --dry-run".split()
    assert main(build_parser().parse_args(command)) == EXIT_OK
    captured = capsys.readouterr()
    assert "Users to run: 100" in captured.out and "no recorded choice" in captured.out
    assert not (tmp_path / "runs").exists()
