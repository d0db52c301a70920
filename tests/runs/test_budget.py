"""Budgets: per-user and per-run LM-call caps hold exactly, on any number of workers, adapter fallbacks included."""

import json

import pytest

from fermi_dspy.runs import personalize_users
from fermi_dspy.runs.budget import CostLedger, call_allotments
from tests.runs import lms
from tests.runs.conftest import run_kwargs, user_results

MIN_CALLS = 9  # one candidate scored on 5 answers + 4 test answers


def results(run_dir):
    return user_results(run_dir)


def test_per_user_cap_holds_exactly_and_keeps_the_best_prompts(users_file, tmp_path):
    summary = personalize_users("hwang", data_path=users_file(4), run_dir=tmp_path / "run",
                                **run_kwargs(max_calls_per_user=15, max_workers=2, num_threads=2))
    assert summary.done == 4
    calls = lms.calls_by_user()
    for user_id, result in results(tmp_path / "run").items():
        tag = f"u{user_id.split('-')[1]}"
        assert result["usage"]["calls"] == calls[tag] <= 15
        assert result["budget"]["allotment"] == 15
        if result["status"] == "budget_limited":
            assert result["result"]["stop_reason"] == "budget" and result["result"]["prompts_kept"] >= 1
            assert result["result"]["test_scored"] == 4  # the test answers were kept room for
    assert summary.budget_limited >= 1


def test_per_run_cap_is_split_in_user_order_and_never_exceeded(users_file, tmp_path):
    summary = personalize_users("hwang", data_path=users_file(6), run_dir=tmp_path / "run",
                                **run_kwargs(max_calls_per_user=15, max_calls_per_run=40, max_workers=3))
    by_user = results(tmp_path / "run")
    assert [by_user[u]["budget"]["allotment"] for u in sorted(by_user)] == [15, 15, 10]
    assert sum(r["usage"]["calls"] for r in by_user.values()) <= 40
    assert sum(lms.calls_by_user().values()) == summary.usage["calls"] <= 40
    assert summary.status == "budget" and summary.not_started == 3 and summary.done == 3
    assert summary.not_started_users == ("synthetic-4", "synthetic-5", "synthetic-6")
    assert not summary.ok


def test_per_run_cap_without_per_user_cap_reserves_each_users_maximum(users_file, tmp_path):
    summary = personalize_users("hwang", data_path=users_file(4), run_dir=tmp_path / "run",
                                **run_kwargs(max_calls_per_run=60, max_workers=2))
    allotments = [r["budget"]["allotment"] for _, r in sorted(results(tmp_path / "run").items())]
    assert allotments == [27, 27]  # the third user would get 6 calls, fewer than the 9 it needs
    assert summary.usage["calls"] <= 60 and summary.not_started == 2


def test_run_cap_results_are_the_same_with_any_number_of_workers(users_file, tmp_path):
    data = users_file(5)
    caps = {"max_calls_per_user": 20, "max_calls_per_run": 70}
    personalize_users("hwang", data_path=data, run_dir=tmp_path / "one", **run_kwargs(max_workers=1, **caps))
    personalize_users("hwang", data_path=data, run_dir=tmp_path / "three", **run_kwargs(max_workers=3, **caps))
    assert results(tmp_path / "one") == results(tmp_path / "three")


def test_caps_hold_when_adapter_fallbacks_double_the_calls(users_file, tmp_path):
    summary = personalize_users("hwang", data_path=users_file(2), run_dir=tmp_path / "run",
                                **run_kwargs(task_lm=lms.GARBLED_TASK, max_calls_per_user=20, max_calls_per_run=35))
    calls = lms.calls_by_user()
    by_user = results(tmp_path / "run")
    assert sum(calls.values()) == summary.usage["calls"] <= 35
    assert all(r["usage"]["calls"] <= r["budget"]["allotment"] for r in by_user.values())


def test_raising_the_run_cap_on_resume_runs_the_users_left_without_budget(users_file, tmp_path):
    data = users_file(4)
    first = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run",
                              **run_kwargs(max_calls_per_user=15, max_calls_per_run=30))
    assert first.done == 2 and first.not_started == 2
    lms.reset()
    second = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run",
                               **run_kwargs(max_calls_per_user=15, max_calls_per_run=60))
    assert second.done == 4 and second.already_done == 2 and second.status == "completed"
    assert set(lms.calls_by_user()) == {"u3", "u4"}
    assert second.usage["calls"] <= 60


def test_a_per_user_cap_below_what_a_user_needs_starts_nobody(users_file, tmp_path):
    summary = personalize_users("hwang", data_path=users_file(2), run_dir=tmp_path / "run",
                                **run_kwargs(max_calls_per_user=MIN_CALLS - 1))
    assert summary.done == 0 and summary.not_started == 2 and sum(lms.calls_by_user().values()) == 0
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    reasons = [e["reason"] for e in events if e["event"] == "user_not_started"]
    assert reasons and all("max_calls_per_user=8 is below the 9 calls" in r for r in reasons)


def test_call_allotments_never_add_up_past_the_cap():
    assert call_allotments([10, 10, 10], run_cap=25) == [10, 10, 5]
    assert call_allotments([10, 10, 10], run_cap=None) == [10, 10, 10]
    assert call_allotments([10, 10, 10], run_cap=25, fixed={0: 3}) == [3, 10, 10]
    assert call_allotments([None, None], run_cap=None) == [None, None]
    with pytest.raises(ValueError, match="per-user cap or estimate"):
        call_allotments([None], run_cap=5)


def test_cost_ledger_reserves_and_settles():
    ledger = CostLedger(1.0)
    assert ledger.reserve(0.4) == (True, 0.4)
    assert ledger.reserve(0.8) == (True, pytest.approx(0.6))
    assert ledger.reserve(0.1) == (False, 0.0)
    ledger.settle(0.4, 0.1)
    assert ledger.reserve(None) == (True, pytest.approx(0.3))
    assert CostLedger(None).reserve(0.5) == (True, 0.5)
