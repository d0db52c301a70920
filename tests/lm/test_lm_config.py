"""Spec parsing and remote LMs: settings must reach the wire through DSPy; dead servers must fail fast and clearly."""

import logging

import dspy
import pytest

from fermi_dspy.lm import config
from fermi_dspy.lm.config import ROLE_DEFAULTS, LMSpec, build_lm, resolve_spec
from fermi_dspy.lm.errors import EngineNotInstalledError, LMSpecError

# -- spec parsing ------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (config.LM_ENV, config.PROPOSER_LM_ENV, config.LOCAL_MODEL_ENV, config.THREADS_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, LMSpec("local", "qwen2.5-coder-0.5b")),
        ("local", LMSpec("local", "qwen2.5-coder-0.5b")),
        (" LOCAL ", LMSpec("local", "qwen2.5-coder-0.5b")),
        ("local:qwen2.5-coder-1.5b", LMSpec("local", "qwen2.5-coder-1.5b")),
        ("local:/models/x.gguf", LMSpec("local", "/models/x.gguf")),
        ("/models/y.gguf", LMSpec("local", "/models/y.gguf")),
        ("openai/gpt-4o-mini", LMSpec("remote", "openai/gpt-4o-mini")),
        ("openai/qwen2.5-7b-instruct", LMSpec("remote", "openai/qwen2.5-7b-instruct")),
        ("anthropic/claude-3-5-haiku-latest", LMSpec("remote", "anthropic/claude-3-5-haiku-latest")),
    ],
)
def test_resolve_spec(spec, expected):
    assert resolve_spec(spec) == expected


def test_spec_from_environment(monkeypatch):
    monkeypatch.setenv(config.LM_ENV, "openai/task-model")
    assert resolve_spec(None) == LMSpec("remote", "openai/task-model")
    assert resolve_spec(None, role="proposer") == LMSpec("remote", "openai/task-model")
    monkeypatch.setenv(config.PROPOSER_LM_ENV, "local:smollm2-135m")
    assert resolve_spec(None, role="proposer") == LMSpec("local", "smollm2-135m")
    assert resolve_spec(None, role="task") == LMSpec("remote", "openai/task-model")
    monkeypatch.setenv(config.LOCAL_MODEL_ENV, "qwen2.5-coder-1.5b")
    assert resolve_spec("local") == LMSpec("local", "qwen2.5-coder-1.5b")
    assert resolve_spec("local", local_model="smollm2-135m") == LMSpec("local", "smollm2-135m")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("local:", "names no model"),
        ("openai/gpt 4o", "whitespace"),
        ("smollm2-135m", "local:smollm2-135m"),
    ],
)
def test_bad_specs_explain_the_fix(spec, message):
    with pytest.raises(LMSpecError, match=message):
        resolve_spec(spec)


def test_bad_role():
    with pytest.raises(LMSpecError, match="role"):
        resolve_spec("local", role="judge")


def test_local_spec_without_llama_cpp_names_the_install_command(monkeypatch):
    def missing():
        raise EngineNotInstalledError("needs llama-cpp-python: pip install 'fermi-dspy[local]'")

    monkeypatch.setattr(config, "import_llama_cpp", missing)
    with pytest.raises(EngineNotInstalledError, match="fermi-dspy\\[local\\]"):
        build_lm("local")


def test_bad_thread_count_from_environment(monkeypatch):
    monkeypatch.setattr(config, "import_llama_cpp", lambda: None)
    monkeypatch.setenv(config.THREADS_ENV, "two")
    with pytest.raises(LMSpecError, match="FERMI_DSPY_THREADS"):
        build_lm("local")


def test_local_spec_ignores_remote_settings_and_uses_role_defaults(monkeypatch):
    seen = {}
    monkeypatch.setattr(config, "local_lm", lambda model, **kwargs: seen.update(model=model, **kwargs) or "LM")
    # One command line may pair a local task LM with a remote proposer: api_base/api_key are for the remote one.
    assert build_lm("local:smollm2-135m", role="proposer", api_base="http://127.0.0.1:1/v1", api_key="k") == "LM"
    assert seen == {"model": "smollm2-135m", "route": "inprocess", "cache": True, **ROLE_DEFAULTS["proposer"],
                    "stop_loops": 6}


# -- settings reach the wire -------------------------------------------------------------------------------------


def ask(lm: dspy.LM) -> dspy.Prediction:
    with dspy.context(lm=lm):
        return dspy.Predict("question -> answer")(question="Which option, A or B?")


def test_task_lm_settings_reach_the_wire(stub_server):
    lm = build_lm("openai/served-model", api_base=stub_server.api_base, temperature=0.3, max_tokens=77, cache=False)
    assert ask(lm).answer == "B"
    body = stub_server.requests[-1]
    assert body["model"] == "served-model"
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 77 and "max_completion_tokens" not in body
    assert "Which option, A or B?" in body["messages"][-1]["content"]
    assert stub_server.headers[-1]["authorization"] == "Bearer local"


def test_role_defaults_reach_the_wire(stub_server):
    ask(build_lm("openai/m", api_base=stub_server.api_base, cache=False))
    ask(build_lm("openai/m", role="proposer", api_base=stub_server.api_base, cache=False))
    task, proposer = stub_server.requests[-2:]
    assert (task["temperature"], task["max_tokens"]) == (0.0, 256)
    assert (proposer["temperature"], proposer["max_tokens"]) == (0.7, ROLE_DEFAULTS["proposer"]["max_tokens"])


def test_environment_spec_reaches_the_wire(stub_server, monkeypatch):
    monkeypatch.setenv(config.LM_ENV, "openai/from-env")
    ask(build_lm(api_base=stub_server.api_base, cache=False))
    assert stub_server.requests[-1]["model"] == "from-env"


def test_api_key_is_sent_but_never_logged_or_saved(stub_server, caplog):
    secret = "sk-test-0123456789-secret"
    with caplog.at_level(logging.DEBUG):
        lm = build_lm("openai/m", api_base=stub_server.api_base, api_key=secret, cache=False)
        ask(lm)
    assert stub_server.headers[-1]["authorization"] == f"Bearer {secret}"
    assert secret not in caplog.text
    assert secret not in str(lm.dump_state())


def test_temperature_override_via_copy_reaches_the_wire(stub_server):
    lm = build_lm("openai/m", api_base=stub_server.api_base, cache=False)
    ask(lm.copy(temperature=1.0, rollout_id=5))
    assert stub_server.requests[-1]["temperature"] == 1.0


# -- failures are fast and clear ---------------------------------------------------------------------------------


def test_unreachable_api_base_fails_at_build_time(dead_port):
    with pytest.raises(LMSpecError, match=f"127.0.0.1:{dead_port}/v1"):
        build_lm("openai/m", api_base=f"http://127.0.0.1:{dead_port}/v1")


def test_malformed_api_base(dead_port):
    with pytest.raises(LMSpecError, match="http"):
        build_lm("openai/m", api_base=f"127.0.0.1:{dead_port}")


def test_unreachable_server_at_call_time_raises(dead_port):
    lm = build_lm("openai/m", api_base=f"http://127.0.0.1:{dead_port}/v1", check_connection=False, cache=False,
                  num_retries=0)
    with pytest.raises(dspy.utils.exceptions.LMError, match="Connection error"):
        lm("hi")


def test_server_error_is_raised_with_its_message_after_one_retry(failing_server):
    lm = build_lm("openai/m", api_base=failing_server.api_base, cache=False)
    with pytest.raises(dspy.utils.exceptions.LMError, match="stub exploded"):
        lm("hi")
    assert len(failing_server.requests) == 2  # the default for api_base servers: one retry


def test_a_server_that_never_answers_times_out(silent_port):
    lm = build_lm("openai/m", api_base=f"http://127.0.0.1:{silent_port}/v1", cache=False, num_retries=0, timeout=1)
    with pytest.raises(dspy.utils.exceptions.LMError):
        lm("hi")


def test_task_and_proposer_share_one_loaded_model(monkeypatch, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(config, "import_llama_cpp", lambda: None)
    monkeypatch.setattr(config, "_ENGINES", {})
    task = build_lm(f"local:{gguf}", cache=False)
    proposer = build_lm(f"local:{gguf}", role="proposer", cache=False)
    assert task.model == proposer.model == "local/m"
    # One engine, one copy of the weights in memory; the proposer's view of it stops a reply that starts to loop.
    assert proposer._engine_spec.engine is task._engine_spec and proposer._engine_spec.words == 6
    assert (task.kwargs["temperature"], proposer.kwargs["temperature"]) == (0.0, 0.7)
    assert (task.kwargs["max_tokens"], proposer.kwargs["max_tokens"]) == (256, ROLE_DEFAULTS["proposer"]["max_tokens"])
    assert task._engine_spec._llm is None  # nothing is loaded until the first call
