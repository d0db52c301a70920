"""The main job end to end on real users with scripted LMs: outputs, saved programs, resume."""

import csv
import importlib.util
import json

import pytest

from fermi_dspy.data import DataNotFoundError, default_data_dir
from fermi_dspy.runs import ManifestMismatchError
from fermi_dspy.testing import instant_engine
from programs.main_job import MainJobSettings, load_personalized, run_main_job

SPEC = "factory:fermi_dspy.testing:instant_lm"


@pytest.fixture(autouse=True)
def _needs_data():
    try:
        default_data_dir()
    except DataNotFoundError as exc:
        pytest.skip(f"real data not available: {exc}")


def calls() -> int:
    return len(instant_engine("task").calls) + len(instant_engine("proposer").calls)


SETTINGS = MainJobSettings(dataset="hwang", users=2, n_train=6, n_test=5, num_iterations=2, num_candidates=2)


def test_main_job_writes_the_run_directory_and_resumes(tmp_path):
    report = run_main_job(SETTINGS, tmp_path, task_lm=SPEC, display_progress=False)
    plot = {"plot.png"} if importlib.util.find_spec("matplotlib") else set()  # the plot extra
    assert {p.name for p in tmp_path.iterdir()} >= {"report.json", "results.csv", "manifest.json", "users", *plot}
    saved = json.loads((tmp_path / "report.json").read_text())
    assert len(saved["users"]) == 2 and set(saved["overall"]) == {"zero_shot", "profile_prompt", "fermi"}
    assert saved["lms"]["task"]["spec"] == SPEC and saved["run_status"] == "completed"
    for user in saved["users"]:
        assert user["n_train"] == 6 and user["n_test"] == 5
        assert user["fermi_compile_calls"]["task"] > 0 and user["test_calls"] == dict.fromkeys(user["test_calls"], 5)
        assert all(0.0 <= a <= 1.0 for a in user["accuracy"].values())
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 6 and {r["method"] for r in rows} == {"zero_shot", "profile_prompt", "fermi"}
    program = load_personalized(tmp_path, saved["users"][0]["user_id"])
    assert "Answer as this person would. (variant" in " ".join(program.prompts)
    assert "Political party" not in json.dumps(saved)  # no profile next to scores in the report
    assert report["table"].count("\n") >= 4 and " rejected" in report["table"]
    routed = sum(u["fermi"]["test_routed_past_best"] for u in saved["users"])
    assert f"Retrieval-of-Prompt answered {routed} of 10 Fermi test questions" in report["table"]
    details = json.loads((tmp_path / "users" / saved["users"][0]["user_id"] / "details.json").read_text())
    assert len(details["test"]["prompt_index"]) == 5
    assert isinstance(saved["proposals_rejected"], dict)
    assert all(isinstance(u["fermi"]["proposals_rejected"], dict) for u in saved["users"])

    before = calls()
    again = run_main_job(SETTINGS, tmp_path, task_lm=SPEC, display_progress=False)
    assert calls() == before  # finished users are not run (or paid for) again
    assert again["overall"] == saved["overall"]


def test_other_settings_into_the_same_directory_are_refused(tmp_path):
    small = MainJobSettings(dataset="hwang", users=1, n_train=4, n_test=2, num_iterations=1, num_candidates=1)
    run_main_job(small, tmp_path, task_lm=SPEC, display_progress=False)
    with pytest.raises(ManifestMismatchError):
        run_main_job(MainJobSettings(dataset="hwang", users=1, n_train=5, n_test=2), tmp_path, task_lm=SPEC,
                     display_progress=False)


def test_a_per_user_call_cap_covers_fermi_and_the_baselines(tmp_path):
    capped = MainJobSettings(dataset="hwang", users=1, n_train=6, n_test=5, num_iterations=3, num_candidates=2,
                             max_calls_per_user=30)
    before = calls()
    report = run_main_job(capped, tmp_path, task_lm=SPEC, display_progress=False)
    assert calls() - before <= 30
    assert report["users"][0]["test_calls"]["zero_shot"] == 5  # the baselines' share was kept for them
