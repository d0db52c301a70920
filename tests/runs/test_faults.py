"""Faults, through a loopback OpenAI-compatible stub: 429/5xx/timeouts are retried by DSPy with backoff; a user whose
endpoint keeps failing is recorded with its reason and the run goes on; no API key ever reaches the disk or logs."""

import json
import logging
from pathlib import Path

import pytest

from fermi_dspy.runs import LMConfig, Secret, personalize_users
from fermi_dspy.runs.redact import REDACTED, redact, register_secret
from tests.runs.conftest import run_kwargs
from tests.stub_server import StubOpenAIServer

FAKE_KEY = "sk-fake-TESTKEY-0123456789abcdef"
FAST = {"fermi": {"num_iterations": 1, "num_candidates": 2, "retrieval_fields": ["question"]}}


def stub_lm(api_base: str, **overrides) -> LMConfig:
    """gpt-4o-mini (so LiteLLM prices it) served by the stub, with the fake key and quick retries."""
    settings = {"spec": "openai/gpt-4o-mini", "api_base": api_base, "api_key": Secret(FAKE_KEY), "num_retries": 2,
                "timeout": 1.0, "cache": False}
    settings.update(overrides)
    return LMConfig(**settings)


def scan(folder: Path) -> list[str]:
    """Files under `folder` that hold the fake key or an Authorization value."""
    hits = []
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            if FAKE_KEY in text or "TESTKEY" in text or "Bearer sk" in text:
                hits.append(str(path))
    return hits


def test_429_5xx_and_timeouts_are_retried_and_the_users_finish(users_file, tmp_path):
    with StubOpenAIServer() as stub:
        api_base = stub.api_base
        stub.slow_seconds = 6.0  # well past the client's timeout, which no ordinary reply comes near
        stub.next_failures = ["429", "500", "ok", "503", "slow"]  # each call fails at most num_retries=2 times
        summary = personalize_users("hwang", data_path=users_file(2), run_dir=tmp_path / "run",
                                    **run_kwargs(task_lm=stub_lm(api_base, timeout=3.0), proposer_lm=None, **FAST))
        assert summary.done == 2 and summary.failed == 0
        assert [stub.count(o) for o in ("429", "500", "503", "slow")] == [1, 1, 1, 1]
        # every LM call is one request, plus one request per retried failure
        assert stub.count() == summary.usage["calls"] + 4
        assert summary.usage["cost"] is not None and summary.usage["cost"] > 0  # DSPy prices gpt-4o-mini


def test_a_user_whose_endpoint_keeps_failing_is_recorded_and_the_run_goes_on(users_file, tmp_path):
    data = users_file(3)
    with StubOpenAIServer() as stub:
        api_base = stub.api_base
        stub.user_failures = {"u2": "503"}
        summary = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run",
                                    **run_kwargs(task_lm=stub_lm(api_base), proposer_lm=None, **FAST))
        assert summary.done == 2 and summary.failed == 1 and summary.status == "completed" and not summary.ok
        [failure] = summary.failures
        assert failure.user_id == "synthetic-2" and failure.error_type == "LMServerError" and failure.attempts == 1
        assert "stub failure 503" in failure.reason
        assert stub.count("503") == 3  # the first call, tried 1 + num_retries=2 times; then the user stopped
        on_disk = json.loads((tmp_path / "run" / "failures.json").read_text())
        assert [f["user_id"] for f in on_disk] == ["synthetic-2"]
        assert (tmp_path / "run" / "users" / "synthetic-2" / "failure.json").exists()
        assert not (tmp_path / "run" / "users" / "synthetic-2" / "result.json").exists()

        stub.user_failures = {}
        resumed = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run",
                                    **run_kwargs(task_lm=stub_lm(api_base), proposer_lm=None, **FAST))
        assert resumed.done == 3 and resumed.failed == 0 and resumed.already_done == 2
        result = json.loads((tmp_path / "run" / "users" / "synthetic-2" / "result.json").read_text())
        assert result["attempts"] == 2 and result["budget"]["calls_in_failed_attempts"] == 1
        assert not (tmp_path / "run" / "users" / "synthetic-2" / "failure.json").exists()


def test_user_retries_rerun_a_failed_user_within_the_run(users_file, tmp_path):
    with StubOpenAIServer() as stub:
        api_base = stub.api_base
        stub.user_failures = {"u1": "500x2"}
        summary = personalize_users("hwang", data_path=users_file(2), run_dir=tmp_path / "run",
                                    **run_kwargs(user_retries=1, task_lm=stub_lm(api_base, num_retries=1),
                                                 proposer_lm=None, **FAST))
    assert summary.done == 2 and summary.failed == 0
    result = json.loads((tmp_path / "run" / "users" / "synthetic-1" / "result.json").read_text())
    assert result["attempts"] == 2


def test_failed_attempts_count_against_the_users_cap(users_file, tmp_path):
    data = users_file(1)
    with StubOpenAIServer() as stub:
        api_base = stub.api_base
        stub.user_failures = {"u1": "500x2"}
        kwargs = run_kwargs(task_lm=stub_lm(api_base, num_retries=1), proposer_lm=None, max_calls_per_user=20,
                            user_retries=1, **FAST)
        summary = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **kwargs)
    result = json.loads((tmp_path / "run" / "users" / "synthetic-1" / "result.json").read_text())
    assert summary.done == 1
    assert result["usage"]["calls"] + result["budget"]["calls_in_failed_attempts"] <= 20


def test_no_api_key_reaches_the_run_directory_or_the_logs(users_file, tmp_path, caplog, capsys, monkeypatch):
    monkeypatch.setenv("STUB_API_KEY", FAKE_KEY)
    caplog.set_level(logging.DEBUG)
    with StubOpenAIServer() as stub:
        api_base = stub.api_base
        stub.user_failures = {"u2": "401", "u3": "500"}
        summary = personalize_users(
            "hwang", data_path=users_file(3), run_dir=tmp_path / "run",
            **run_kwargs(task_lm=stub_lm(api_base, api_key=None, api_key_env="STUB_API_KEY"), proposer_lm=None,
                         **FAST))
        assert stub.count() and all(h.get("authorization") for h in stub.headers)  # the key was sent...
    assert summary.done == 1 and summary.failed == 2
    auth = next(f for f in summary.failures if f.user_id == "synthetic-2")
    assert auth.error_type == "LMAuthError" and "Incorrect API key provided" in auth.reason
    assert REDACTED in auth.reason  # ... and the echoed header was scrubbed
    assert scan(tmp_path / "run") == []
    logged = caplog.text + capsys.readouterr().err
    assert FAKE_KEY not in logged and "TESTKEY" not in logged
    assert FAKE_KEY not in repr(stub_lm("http://x")) and FAKE_KEY not in str(Secret(FAKE_KEY))


@pytest.mark.parametrize("text", [
    "Authorization: Bearer abc123def456ghi",
    "headers={'Authorization': 'Bearer abc123def456ghi'}",
    "api_key=abc123def456ghi&x=1",
    '{"api_key": "abc123def456ghi"}',
    "Incorrect API key provided: sk-proj-abc123def456ghi",
])
def test_redact_removes_key_shaped_values(text):
    assert "abc123def456ghi" not in redact(text)


def test_redact_removes_registered_secrets_and_leaves_prose_alone():
    register_secret("plainsecretvalue")
    assert redact("the key plainsecretvalue leaked") == f"the key {REDACTED} leaked"
    prose = "This person supports guns and taxes; max_tokens: 512; the bearer of bad news."
    assert redact(prose) == prose


MAX_CALL_USD = 2500 * 0.15e-6 + 8 * 0.6e-6  # a request of 10,000 characters at gpt-4o-mini's prices


def test_usd_caps_hold_where_dspy_reports_cost(users_file, tmp_path):
    with StubOpenAIServer() as stub:
        api_base = stub.api_base
        summary = personalize_users("hwang", data_path=users_file(4), run_dir=tmp_path / "run",
                                    **run_kwargs(task_lm=stub_lm(api_base), proposer_lm=None, max_cost_per_user=6e-4,
                                                 max_cost_per_run=1.5e-3))
    costs = [json.loads(p.read_text())["usage"]["cost"] for p in (tmp_path / "run").glob("users/*/result.json")]
    assert costs and all(0 < cost <= 6e-4 + MAX_CALL_USD for cost in costs)
    assert summary.usage["cost"] <= 1.5e-3 + summary.done * MAX_CALL_USD
    assert summary.budget_limited >= 1 and summary.not_started >= 1
