"""The weaker spots, each made right or visible: retries sized for flaky servers, tokens of failed users and cache hits,
users whose replies never parse, the endpoint in DSPy's cache key, the port of a loopback server, empty input."""

import json

import pytest

from fermi_dspy.data import DataError
from fermi_dspy.runs import LMConfig, estimate_users, personalize_users
from fermi_dspy.runs.cli import EXIT_INCOMPLETE, EXIT_REFUSED, build_parser, main
from tests.runs import lms
from tests.runs.conftest import run_kwargs
from tests.stub_server import StubOpenAIServer

FAST = {"fermi": {"num_iterations": 1, "num_candidates": 2, "retrieval_fields": ["question"]}}


def server_lm(api_base: str, **overrides) -> LMConfig:
    """An OpenAI-compatible server's model with the run's defaults (no key, no retry setting)."""
    return LMConfig(**{"spec": "openai/stub-model", "api_base": api_base, "cache": False, **overrides})


def test_a_30_percent_fault_rate_does_not_fail_users_with_the_default_retries(users_file, tmp_path):
    with StubOpenAIServer() as stub:
        api_base = stub.api_base
        stub.cycle = ["500"] * 3 + ["ok"] * 7  # 30% of requests fail, in bursts of three
        summary = personalize_users("hwang", data_path=users_file(3), run_dir=tmp_path / "run",
                                    **run_kwargs(task_lm=server_lm(api_base), proposer_lm=None, **FAST))
        assert stub.count("500") >= 10
    assert summary.failed == 0 and summary.done == 3, [f.reason for f in summary.failures]


def test_tokens_of_failed_users_are_counted(users_file, tmp_path):
    with StubOpenAIServer() as stub:
        api_base = stub.api_base
        stub.cycle = ["ok"] * 12 + ["503"] * 40  # user 1 gets a dozen replies, then the endpoint goes down
        summary = personalize_users("hwang", data_path=users_file(1), run_dir=tmp_path / "run",
                                    **run_kwargs(task_lm=server_lm(api_base, num_retries=0), proposer_lm=None,
                                                 **FAST))
    assert summary.failed == 1
    failure = json.loads((tmp_path / "run" / "users" / "synthetic-1" / "failure.json").read_text())
    assert failure["calls_spent"] >= 12 and failure["prompt_tokens"] > 0
    assert summary.usage["prompt_tokens"] == failure["prompt_tokens"] > 0
    assert summary.usage["total_tokens"] > 0


def test_cache_hits_are_counted_with_their_tokens(users_file, tmp_path):
    data = users_file(1)
    with StubOpenAIServer() as stub:
        api_base = stub.api_base
        lm = server_lm(api_base, cache=True)
        first = personalize_users("hwang", data_path=data, run_dir=tmp_path / "first",
                                  **run_kwargs(task_lm=lm, proposer_lm=None, **FAST))
        served = stub.count()
        second = personalize_users("hwang", data_path=data, run_dir=tmp_path / "second",
                                   **run_kwargs(task_lm=lm, proposer_lm=None, **FAST))
        assert stub.count() == served  # everything came from DSPy's cache
    assert first.usage["cache_hits"] == 0 and first.usage["total_tokens"] > 0
    assert second.usage["calls"] == first.usage["calls"] == second.usage["cache_hits"]
    # DSPy drops a cached reply's usage; its tokens are estimated from its text (characters / 4)
    assert 0.5 * first.usage["total_tokens"] <= second.usage["cached_tokens"] <= 2 * first.usage["total_tokens"]
    assert second.usage["total_tokens"] == 0  # nothing was paid for again
    assert "from DSPy's cache" in second.format()


def test_two_servers_with_the_same_model_name_never_share_cache_entries(users_file, tmp_path):
    data = users_file(1)
    with StubOpenAIServer() as first, StubOpenAIServer() as second:
        first_base, second_base = first.api_base, second.api_base
        personalize_users("hwang", data_path=data, run_dir=tmp_path / "first",
                          **run_kwargs(task_lm=server_lm(first_base, cache=True), proposer_lm=None, **FAST))
        summary = personalize_users("hwang", data_path=data, run_dir=tmp_path / "second",
                                    **run_kwargs(task_lm=server_lm(second_base, cache=True), proposer_lm=None, **FAST))
        assert first.count() > 0 and second.count() == first.count()
        assert {r["model"] for r in first.requests + second.requests} == {"stub-model"}
    assert summary.usage["cache_hits"] == 0


def test_a_loopback_servers_port_is_not_part_of_the_run_identity(users_file, tmp_path):
    data = users_file(2)
    with StubOpenAIServer() as stub:
        first_base = stub.api_base
        personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", limit=1,
                          **run_kwargs(task_lm=server_lm(first_base), proposer_lm=None, **FAST))
    with StubOpenAIServer() as second:  # the server restarted on another port
        second_base = second.api_base
        assert second_base != first_base
        summary = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run",
                                    **run_kwargs(task_lm=server_lm(second_base), proposer_lm=None, **FAST))
        assert second.count() > 0
    assert summary.done == 2 and summary.already_done == 1
    starts = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    bases = [e["lms"]["task"]["api_base"] for e in starts if e["event"] == "run_started"]
    assert bases == [first_base, second_base]  # the port each invocation used is logged


def test_the_port_of_a_remote_host_stays_part_of_the_identity():
    assert LMConfig("openai/m", api_base="http://127.0.0.1:8123/v1").describe()["api_base"] == "http://127.0.0.1/v1"
    assert LMConfig("openai/m", api_base="http://localhost:9/v1").describe()["api_base"] == "http://localhost/v1"
    assert LMConfig("openai/m", api_base="http://[::1]:9/v1").describe()["api_base"] == "http://[::1]/v1"
    assert LMConfig("openai/m", api_base="https://gpu-box:8000/v1").describe()["api_base"] == "https://gpu-box:8000/v1"


def test_a_user_whose_replies_were_all_unparseable_fails_with_the_reason_and_the_exit_code(users_file, tmp_path,
                                                                                             capsys):
    # Fermi itself refuses to go on when every task-LM call of its first scoring round failed, so such a user is
    # recorded as failed with that reason (never "done" with score 0.0), and the run's exit code says so.
    data = users_file(2)
    summary = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run",
                                **run_kwargs(task_lm=lms.GARBLED_TASK))
    assert summary.done == 0 and not summary.ok
    assert {f.user_id for f in summary.failures} == {"synthetic-1", "synthetic-2"}
    assert all("first scoring round failed" in f.reason and "parse" in f.reason for f in summary.failures)
    assert not (tmp_path / "run" / "users" / "synthetic-1" / "result.json").exists()

    args = ["--data", "hwang", "--data-path", str(data), "--run-dir", str(tmp_path / "cli"), "--lm",
            lms.GARBLED_TASK, "--proposer-lm", lms.PROPOSER, "--train", "6", "--test", "4", "--iterations", "2",
            "--candidates", "2", "--no-progress"]
    assert main(build_parser().parse_args(args)) == EXIT_INCOMPLETE
    captured = capsys.readouterr()
    assert "first scoring round failed" in captured.out + captured.err

    fine = personalize_users("hwang", data_path=data, run_dir=tmp_path / "fine", **run_kwargs())
    assert fine.unparseable == 0 and fine.ok


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_an_empty_data_file_is_a_clear_error(tmp_path, capsys, content):
    empty = tmp_path / "records.jsonl"
    empty.write_text(content)
    with pytest.raises(DataError, match="no users"):
        personalize_users("hwang", data_path=empty, run_dir=tmp_path / "run", **run_kwargs())
    assert not (tmp_path / "run" / "manifest.json").exists()
    with pytest.raises(DataError, match="no users"):
        estimate_users("hwang", data_path=empty, **run_kwargs())
    status = main(build_parser().parse_args(["--data", "hwang", "--data-path", str(empty), "--run-dir",
                                             str(tmp_path / "cli"), "--lm", lms.TASK, "--no-progress"]))
    err = capsys.readouterr().err
    assert status == EXIT_REFUSED and "no users" in err and str(empty) in err


def test_no_user_left_to_run_is_a_clear_error(users_file, tmp_path):
    data = users_file(2, n_answers=5)  # too few answers for 6 train + 4 test
    with pytest.raises(DataError, match=r"no users.*too few"):
        personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **run_kwargs())
    with pytest.raises(DataError, match="no users"):
        personalize_users([], run_dir=tmp_path / "memory", **run_kwargs())
