"""Secrets are redacted wherever a run writes: URL userinfo and its Basic-auth encoding, bearer keys, and any header a
server echoes, in failure.json, failures.json, summary.json, events.jsonl, stdout, stderr and the logs."""

import base64
import logging
from pathlib import Path

import pytest

from fermi_dspy.runs import LMConfig, Secret, personalize_users
from fermi_dspy.runs.cli import EXIT_INCOMPLETE, EXIT_REFUSED, build_parser, main
from fermi_dspy.runs.redact import REDACTED, redact
from tests.runs.conftest import run_kwargs
from tests.stub_server import StubOpenAIServer

USER, PASSWORD = "alice", "pw-Secret-4242"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
KEY = "sk-fake-ECHOKEY-0123456789abcdef"
FAST = ["--train", "6", "--test", "4", "--iterations", "1", "--candidates", "2", "--no-progress"]


def leaks(texts: list[str], *secrets: str) -> list[str]:
    return [secret for secret in secrets for text in texts if secret in text]


def written(folder: Path) -> list[str]:
    return [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.mark.parametrize("text", [
    f"Incorrect API key provided: Basic {BASIC}",
    f"headers {{'authorization': 'Basic {BASIC}'}}",
    f"Authorization: Basic {BASIC}",
    f"http://{USER}:{PASSWORD}@127.0.0.1:8000/v1 refused",
    f"see https://{USER}:{PASSWORD}@host/v1/chat",
])
def test_redact_removes_url_userinfo_and_its_basic_auth_encoding(text):
    cleaned = redact(text)
    assert PASSWORD not in cleaned and BASIC not in cleaned and REDACTED in cleaned


def test_redact_leaves_prose_about_basic_things_alone():
    prose = "Basic settings apply; basic income is fine; see http://127.0.0.1:8000/v1 and user@example.org."
    assert redact(prose) == prose


def test_userinfo_in_api_base_is_refused_before_anything_is_sent_or_written(users_file, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    with StubOpenAIServer() as stub:
        api_base = stub.api_base
        stub.cycle = ["echo"]
        with_userinfo = api_base.replace("http://", f"http://{USER}:{PASSWORD}@")
        status = main(build_parser().parse_args([
            "--data", "hwang", "--data-path", str(users_file(2)), "--run-dir", str(tmp_path / "run"),
            "--lm", "openai/gpt-4o-mini", "--api-base", with_userinfo, "--num-retries", "0", *FAST]))
        assert stub.count() == 0
    captured = capsys.readouterr()
    assert status == EXIT_REFUSED
    assert "--api-base" in captured.err and "--api-key-env" in captured.err and "user:password@" in captured.err
    texts = [captured.out, captured.err, caplog.text, *written(tmp_path / "run")]
    assert leaks(texts, PASSWORD, BASIC, f"{USER}:") == []
    with pytest.raises(ValueError, match="api_key_env"):
        LMConfig("openai/gpt-4o-mini", api_base=with_userinfo)


def test_headers_a_server_echoes_are_redacted_in_every_file_and_stream(users_file, tmp_path, capsys, caplog,
                                                                       monkeypatch):
    monkeypatch.setenv("ECHO_TEST_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    with StubOpenAIServer() as stub:
        api_base = stub.api_base
        stub.user_failures = {"u1": "echo"}
        status = main(build_parser().parse_args([
            "--data", "hwang", "--data-path", str(users_file(2)), "--run-dir", str(tmp_path / "run"),
            "--lm", "openai/gpt-4o-mini", "--api-base", api_base, "--api-key-env", "ECHO_TEST_KEY",
            "--num-retries", "0", *FAST]))
        assert any(h["authorization"] == f"Bearer {KEY}" for h in stub.headers)  # the key went out as a bearer
    assert status == EXIT_INCOMPLETE
    captured = capsys.readouterr()
    assert "headers" in captured.out and REDACTED in captured.out  # the echo is reported, scrubbed
    run = tmp_path / "run"
    for name in ("failures.json", "summary.json", "events.jsonl", "users/synthetic-1/failure.json"):
        assert (run / name).exists() and REDACTED in (run / name).read_text(), name
    texts = [captured.out, captured.err, caplog.text, *written(run)]
    assert leaks(texts, KEY, "ECHOKEY") == []


def test_a_bearer_key_given_in_python_is_sent_and_never_written(users_file, tmp_path):
    with StubOpenAIServer() as stub:
        api_base = stub.api_base
        stub.user_failures = {"u2": "echo"}
        lm = LMConfig("openai/gpt-4o-mini", api_base=api_base, api_key=Secret(KEY), num_retries=0, cache=False)
        summary = personalize_users("hwang", data_path=users_file(2), run_dir=tmp_path / "run",
                                    **run_kwargs(task_lm=lm, proposer_lm=None,
                                                 fermi={"num_iterations": 1, "num_candidates": 2,
                                                        "retrieval_fields": ["question"]}))
        assert all(h["authorization"] == f"Bearer {KEY}" for h in stub.headers)
    assert summary.failed == 1 and REDACTED in summary.failures[0].reason
    assert leaks([*written(tmp_path / "run"), summary.format()], KEY, "ECHOKEY") == []
