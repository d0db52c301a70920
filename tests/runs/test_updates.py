"""A resume updates a user whose answers changed from its earlier program (SYNTHETIC users, scripted LMs)."""

import json

import pytest

from fermi_dspy.runs import ManifestMismatchError, UserJob, personalize_users, prepare_users, run_user_jobs
from fermi_dspy.runs.jobs import JobOutput, WorkEstimate
from fermi_dspy.runs.layout import RunDir
from tests.runs import lms
from tests.runs.conftest import run_kwargs


def _grow(path, number: int, n_answers: int) -> None:
    """Give SYNTHETIC user `number` more answers in the data file (the other users' lines stay as they are)."""
    lines = path.read_text().splitlines()
    lines[number - 1] = json.dumps(lms.hwang_row(number, n_answers))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def grown_run(tmp_path):
    """A finished run of 3 users (train = every answer not held out), then user 2 answers two more questions."""
    data = lms.write_users_file(tmp_path / "users.jsonl", 3, n_answers=10)
    run_dir = tmp_path / "run"
    kwargs = run_kwargs(n_train=None, n_test=4)
    first = personalize_users("hwang", data_path=data, run_dir=run_dir, **kwargs)
    assert first.done == 3
    before = RunDir(run_dir).read_result("synthetic-2")
    _grow(data, 2, 12)
    lms.reset()
    return data, run_dir, kwargs, before


def test_a_user_with_new_answers_is_updated_incrementally_and_the_others_are_not_rerun(grown_run):
    data, run_dir, kwargs, before = grown_run
    summary = personalize_users("hwang", data_path=data, run_dir=run_dir, **kwargs)
    assert summary.done == 3 and summary.this_invocation["users_run"] == 1 and summary.already_done == 2
    calls = lms.calls_by_user()
    assert set(calls) == {"u2"}  # nobody else made a call
    after = RunDir(run_dir).read_result("synthetic-2")
    update = after["result"]["update"]
    assert update["mode"] == "incremental" and update["prompts_before"] >= 1
    # At most the 2 new answers are re-scored per kept prompt (those that became optimization answers; the exact counts
    # are in tests/test_incremental.py); the update makes fewer task calls than the first run.
    assert 0 < update["rescored_calls"] <= 2 * update["prompts_before"]
    assert after["result"]["calls"]["compile_task"] < before["result"]["calls"]["compile_task"]
    assert after["result"]["n_train"] == before["result"]["n_train"] + 2
    assert after["updated_from"]["input_sha256"] == before["input_sha256"] != after["input_sha256"]
    assert after["updated_from"]["usage"]["calls"] == before["usage"]["calls"]
    # The run's usage still counts the first version's calls.
    assert summary.usage["calls"] == sum(RunDir(run_dir).read_result(f"synthetic-{n}")["usage"]["calls"]
                                         for n in (1, 2, 3)) + before["usage"]["calls"]


def test_the_manifest_and_the_events_say_the_data_changed_and_who_was_updated(grown_run):
    data, run_dir, kwargs, _ = grown_run
    personalize_users("hwang", data_path=data, run_dir=run_dir, **kwargs)
    run = RunDir(run_dir)
    manifest = run.read_manifest()
    assert len(manifest["data_changes"]) == 1 and manifest["data_source"]["sha256"] == \
        manifest["data_changes"][0]["sha256"] != manifest["data_changes"][0]["sha256_before"]
    events = run.events()
    assert [e["event"] for e in events].count("data_changed") == 1
    started = [e for e in events if e["event"] == "run_started"][-1]
    assert started["updating"] == ["synthetic-2"]
    update_starts = [e for e in events if e["event"] == "user_started" and e.get("update")]
    assert [e["user_id"] for e in update_starts] == ["synthetic-2"]
    # Resuming again with the same file runs nobody.
    again = personalize_users("hwang", data_path=data, run_dir=run_dir, **kwargs)
    assert again.this_invocation["users_run"] == 0 and len(run.read_manifest()["data_changes"]) == 1


def test_a_user_whose_learned_answers_left_training_is_compiled_afresh_with_the_reason(tmp_path):
    data = lms.write_users_file(tmp_path / "users.jsonl", 2, n_answers=10)
    run_dir = tmp_path / "run"
    personalize_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs(n_train=None, n_test=4))
    lines = data.read_text().splitlines()
    row = json.loads(lines[0])
    row["answers"] = row["answers"][1:]  # an answer it learned from (or a test answer) is gone
    lines[0] = json.dumps(row)
    data.write_text("\n".join(lines) + "\n")
    summary = personalize_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs(n_train=None, n_test=4))
    assert summary.done == 2
    update = RunDir(run_dir).read_result("synthetic-1")["result"]["update"]
    if update["mode"] == "fresh":
        assert "not in this trainset" in update["reason"]
    else:  # the removed answer was a test answer: the program still learned only from answers it has
        assert update["mode"] == "incremental" and update["rescored_calls"] == 0


class _CountingJob(UserJob):
    """A job that does not update changed users (like the benchmark)."""

    name = "counting"

    def describe(self) -> dict:
        return {"name": self.name}

    def estimate(self, user, *, seed=0) -> WorkEstimate:
        return WorkEstimate(calls_max=0, min_calls=0)

    def run(self, user, context) -> JobOutput:
        return JobOutput({"answers": len(user.train) + len(user.test)})


def test_a_job_that_does_not_update_still_refuses_changed_input(tmp_path):
    data = lms.write_users_file(tmp_path / "users.jsonl", 2)
    users, source = prepare_users("hwang", data_path=data, n_train=6, n_test=4)
    run_user_jobs(users, _CountingJob(), run_dir=tmp_path / "run", task_lm=lms.TASK, source=source)
    _grow(data, 2, 12)
    users, source = prepare_users("hwang", data_path=data, n_train=6, n_test=4)
    with pytest.raises(ManifestMismatchError, match=r"data\.sha256"):
        run_user_jobs(users, _CountingJob(), run_dir=tmp_path / "run", task_lm=lms.TASK, source=source)


def test_a_program_store_serves_the_updated_program_after_refresh(grown_run):
    from fermi_dspy.runs import ProgramStore

    data, run_dir, kwargs, _ = grown_run
    store = ProgramStore(run_dir)
    first = store["synthetic-2"]
    personalize_users("hwang", data_path=data, run_dir=run_dir, **kwargs)
    assert store["synthetic-2"] is first  # still cached until asked to look again
    store.refresh()
    updated = store["synthetic-2"]
    def learned(program):
        return len(program.router.example_keys) + len(program.router.demonstration_keys)

    assert updated is not first and learned(updated) == learned(first) + 2
    assert store["synthetic-1"] is store["synthetic-1"]


def test_a_run_started_before_the_data_hash_left_the_identity_still_resumes(tmp_path):
    from fermi_dspy.runs.manifest import fingerprint

    data = lms.write_users_file(tmp_path / "users.jsonl", 2)
    run_dir = tmp_path / "run"
    personalize_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs())
    run = RunDir(run_dir)
    manifest = run.read_manifest()
    legacy = {**manifest["identity"], "data": {**manifest["identity"]["data"],
                                               "sha256": manifest["data_source"]["sha256"]}}
    run.write_json("manifest.json", {**manifest, "identity": legacy, "fingerprint": fingerprint(legacy)})
    for folder in (run_dir / "users").iterdir():
        result = json.loads((folder / "result.json").read_text())
        (folder / "result.json").write_text(json.dumps({**result, "run_fingerprint": fingerprint(legacy),
                                                        "run_identity": legacy}))
    summary = personalize_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs())
    assert summary.done == 2 and summary.this_invocation["users_run"] == 0


def test_train_all_on_the_command_line_trains_on_every_answer_not_held_out():
    from fermi_dspy.runs.cli import _common, build_parser

    args = build_parser().parse_args(["--data", "hwang", "--run-dir", "r", "--train", "all", "--test", "5"])
    assert _common(args)["n_train"] is None and _common(args)["n_test"] == 5
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--run-dir", "r", "--train", "most"])
