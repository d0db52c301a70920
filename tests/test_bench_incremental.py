"""`programs.bench_incremental` keeps the users it finished and refuses to mix settings in one file."""

import json

import pytest

from programs.bench_incremental import SETTINGS, previous_rows, summarize

SETTINGS_USED = {"data": "hwang", "first": 10, "more": 10, "test": 10, "first_iterations": 3,
                 "update_iterations": 1, "lm": "local"}


def _row(user_id: str, fresh: float, update: float, *, fresh_calls: int = 300, update_calls: int = 90) -> dict:
    return {"user_id": user_id, "first": {"task": 40, "proposer": 6, "seconds": 1.0},
            "fresh": {"task": fresh_calls - 30, "proposer": 30, "seconds": 10.0, "accuracy": fresh},
            "update": {"task": update_calls - 8, "proposer": 8, "seconds": 3.0, "accuracy": update},
            "first_accuracy": 0.3}


@pytest.mark.parametrize("name", SETTINGS)
def test_a_change_to_any_setting_a_row_depends_on_is_refused(tmp_path, name):
    out = tmp_path / "incremental.json"
    changed = {**SETTINGS_USED, name: "something else"}
    out.write_text(json.dumps({"settings": changed, "users": [_row("u1", 1, 1)]}))
    with pytest.raises(SystemExit, match=name):
        previous_rows(out, SETTINGS_USED)


def test_a_missing_file_has_no_rows(tmp_path):
    assert previous_rows(tmp_path / "incremental.json", SETTINGS_USED) == []


def test_rows_of_the_same_settings_are_kept(tmp_path):
    out = tmp_path / "incremental.json"
    rows = [_row("u1", 0.5, 0.4)]
    out.write_text(json.dumps({"settings": {**SETTINGS_USED, "users": 5, "out": str(out)}, "users": rows}))
    assert previous_rows(out, SETTINGS_USED) == rows


def test_rows_of_other_settings_are_refused_with_the_difference_and_the_fix(tmp_path):
    out = tmp_path / "incremental.json"
    out.write_text(json.dumps({"settings": {**SETTINGS_USED, "update_iterations": 2}, "users": [_row("u1", 1, 1)]}))
    with pytest.raises(SystemExit, match=r"update_iterations: 2 there, 1 now.*another --out"):
        previous_rows(out, SETTINGS_USED)


def test_summary_counts_calls_and_pairs_the_accuracies_by_user():
    rows = [_row("u1", 0.5, 0.4), _row("u2", 0.3, 0.3, fresh_calls=200, update_calls=60)]
    summary = summarize(rows)
    assert summary["calls_fresh"] == 500 and summary["calls_update"] == 150
    assert summary["update_share_of_fresh_calls"] == pytest.approx(0.3)
    assert summary["accuracy_fresh"] == pytest.approx(0.4) and summary["accuracy_update"] == pytest.approx(0.35)
    assert summary["update_minus_fresh"]["mean"] == pytest.approx(-0.05)
    low, high = summary["update_minus_fresh"]["ci95"]
    assert low == pytest.approx(-0.1) and high == pytest.approx(0.0)
