"""The main job end to end on real users with scripted LMs: outputs, saved programs, resume."""

import csv
import json
import re

import pytest

from fermi_dspy.data import DataNotFoundError, default_data_dir
from fermi_dspy.testing import rule_lm
from programs.main_job import MainJobSettings, load_personalized, run_main_job


@pytest.fixture(autouse=True)
def _needs_data():
    try:
        default_data_dir()
    except DataNotFoundError as exc:
        pytest.skip(f"real data not available: {exc}")


def scripted_lms():
    def task(system, user):
        options = re.search(r"\[\[ ## options ## \]\]\n(.*?)\n\n", user, re.S)
        choices = json.loads(options.group(1)) if options else ["?"]
        return {"answer": choices[1 if "second" in system and len(choices) > 1 else 0]}

    counter = iter(range(10**6))
    proposer = rule_lm(lambda s, u: {"new_prompt": f"Pick the second option. ({next(counter)})"}, model="rule/p")
    return rule_lm(task, model="rule/task"), proposer


SETTINGS = MainJobSettings(dataset="hwang", users=2, n_train=6, n_test=5, num_iterations=2, num_candidates=2)


def test_main_job_writes_the_run_directory_and_resumes(tmp_path):
    task, proposer = scripted_lms()
    report = run_main_job(SETTINGS, tmp_path, task_lm=task, proposer_lm=proposer, display_progress=False)
    assert {p.name for p in tmp_path.iterdir()} >= {"report.json", "results.csv", "plot.png", "settings.json", "users"}
    saved = json.loads((tmp_path / "report.json").read_text())
    assert len(saved["users"]) == 2 and set(saved["overall"]) == {"zero_shot", "profile_prompt", "fermi"}
    assert saved["lms"]["task"]["model"] == "rule/task"
    for user in saved["users"]:
        assert user["n_train"] == 6 and user["n_test"] == 5
        assert user["calls"]["fermi_compile_task"]["calls"] > 0 and user["calls"]["zero_shot_test"]["calls"] == 5
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 6 and {r["method"] for r in rows} == {"zero_shot", "profile_prompt", "fermi"}
    program = load_personalized(tmp_path, saved["users"][0]["user_id"])
    assert program.prompts and "Pick the second option" in " ".join(program.prompts)
    assert "Political party" not in json.dumps(saved)  # no profile next to answers/scores in the report
    assert report["table"].count("\n") >= 4

    calls_before = len(task.engine.calls) + len(proposer.engine.calls)
    again = run_main_job(SETTINGS, tmp_path, task_lm=task, proposer_lm=proposer, display_progress=False)
    assert len(task.engine.calls) + len(proposer.engine.calls) == calls_before  # finished users are not re-run
    assert again["overall"] == saved["overall"]


def test_other_settings_into_the_same_directory_are_refused(tmp_path):
    task, proposer = scripted_lms()
    small = MainJobSettings(dataset="hwang", users=1, n_train=4, n_test=2, num_iterations=1, num_candidates=1)
    run_main_job(small, tmp_path, task_lm=task, proposer_lm=proposer, display_progress=False)
    with pytest.raises(ValueError, match="holds a run with other settings"):
        run_main_job(MainJobSettings(dataset="hwang", users=2), tmp_path, task_lm=task, proposer_lm=proposer)
