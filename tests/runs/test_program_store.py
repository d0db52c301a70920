"""Serving a finished run's users by id (SYNTHETIC users, scripted LMs)."""

import threading

import dspy
import pytest

from fermi_dspy.programs import OpinionQA
from fermi_dspy.runs import personalize_users
from fermi_dspy.runs.errors import RunError
from fermi_dspy.runs.layout import RunDir
from fermi_dspy.runs.program_store import ProgramStore, RunInProgressError
from tests.runs import lms
from tests.runs.conftest import run_kwargs


@pytest.fixture
def finished_run(users_file, tmp_path):
    run_dir = tmp_path / "run"
    summary = personalize_users("hwang", data_path=users_file(4), run_dir=run_dir, **run_kwargs())
    assert summary.done == 4
    return run_dir


def test_lookup_by_user_id_builds_the_runs_student_around_the_saved_program(finished_run):
    store = ProgramStore(finished_run)
    assert len(store) == 4 and "synthetic-2" in store and "nobody" not in store
    assert sorted(store) == [f"synthetic-{n}" for n in range(1, 5)]
    program = store["synthetic-2"]
    assert isinstance(program.program, OpinionQA) and program.prompts
    with dspy.context(lm=lms.task_lm()):
        prediction, prompt = store.answer("synthetic-2", question="[u2] Do you support guns?", options=["Yes", "No"])
    assert prediction.answer in ("Yes", "No") and 0 <= prompt < len(program.prompts)
    assert store["synthetic-2"] is program  # cached


def test_the_cache_of_loaded_programs_is_bounded(finished_run):
    store = ProgramStore(finished_run, max_loaded=2)
    first = store["synthetic-1"]
    store["synthetic-2"]
    store["synthetic-3"]
    assert store.loaded == 2
    assert store["synthetic-1"] is not first  # it was dropped, then loaded again


def test_an_unknown_user_is_a_clear_key_error(finished_run):
    with pytest.raises(KeyError, match=r"No finished user 'synthetic-99'.*4 users, e.g. synthetic-1"):
        ProgramStore(finished_run)["synthetic-99"]


def test_threads_share_one_store(finished_run):
    store = ProgramStore(finished_run, max_loaded=2)
    errors, seen = [], []

    def work(n: int) -> None:
        try:
            for _ in range(20):
                seen.append(store[f"synthetic-{n % 4 + 1}"].prompts[0])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and len(seen) == 160 and store.loaded <= 2


def test_a_run_still_in_progress_or_no_run_at_all_is_refused(finished_run, tmp_path):
    with RunDir(finished_run).locked():  # another "process" holds the run
        with pytest.raises(RunInProgressError, match="still being run"):
            ProgramStore(finished_run)
    assert len(ProgramStore(finished_run)) == 4  # once it is done
    with pytest.raises(RunError, match="holds no readable run"):
        ProgramStore(tmp_path / "empty")
