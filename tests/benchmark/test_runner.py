"""The runner's bookkeeping: the same splits for every method, per-(user, method) files, resume, reporting of
methods that cannot run or fail, and excluded users."""

import json

import pytest

import programs.benchmark.methods as methods_module
import programs.benchmark.methods.base as base_module
from programs.benchmark import run_benchmark
from programs.benchmark.runner import rebuild_report
from programs.benchmark.settings import BenchmarkSettings


def test_every_method_gets_the_same_split(tmp_path, small_settings, lms, monkeypatch):
    seen_by_job, tested = {}, {}
    for name, job in list(methods_module.JOBS.items()):
        def spy(task, job=job, name=name):
            seen_by_job[(task.split.user_id, name)] = (task.split.train_ids, task.split.test_ids)
            return job(task)
        monkeypatch.setitem(methods_module.JOBS, name, spy)
    real_evaluate = base_module.evaluate_on_test

    def evaluate_spy(program, test, **kwargs):
        tested.setdefault(id(program), [e.question for e in test])
        return real_evaluate(program, test, **kwargs)

    monkeypatch.setattr(base_module, "evaluate_on_test", evaluate_spy)
    run_benchmark(small_settings, tmp_path, task_lm=lms[0], proposer_lm=lms[1], display_progress=False)

    manifest = {u["user_id"]: u for u in json.loads((tmp_path / "splits.json").read_text())["users"]}
    assert len(manifest) == 2
    for user_id, split in manifest.items():
        splits = {v for (u, _), v in seen_by_job.items() if u == user_id}
        assert splits == {(tuple(split["train_ids"]), tuple(split["test_ids"]))}
        assert not set(split["train_ids"]) & set(split["test_ids"])
    assert len({name for _, name in seen_by_job}) == len(methods_module.JOBS)
    assert len({tuple(questions) for questions in tested.values()}) == 2  # one test set per user, whatever the method


def test_each_result_is_its_own_file_and_a_rerun_resumes(tmp_path, small_settings, lms):
    task, proposer = lms
    first = run_benchmark(small_settings, tmp_path, task_lm=task, proposer_lm=proposer, display_progress=False)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "users").rglob("*.json"))
    assert len(files) == 2 * len(small_settings.methods)
    calls = len(task.engine.calls) + len(proposer.engine.calls)

    again = run_benchmark(small_settings, tmp_path, task_lm=task, proposer_lm=proposer, display_progress=False)
    assert len(task.engine.calls) + len(proposer.engine.calls) == calls  # nothing re-run
    assert [s.to_dict() for s in again.summaries] == [s.to_dict() for s in first.summaries]

    user = first.users.splits[0].user_id
    (tmp_path / "users" / user / "copro.json").unlink()
    third = run_benchmark(small_settings, tmp_path, task_lm=task, proposer_lm=proposer, display_progress=False)
    rerun = next(r for r in third.results if (r.user_id, r.method) == (user, "copro"))
    assert len(task.engine.calls) + len(proposer.engine.calls) - calls == rerun.total_calls > 0  # only that pair


def test_a_rerun_with_other_result_settings_is_refused(tmp_path, small_settings, lms):
    run_benchmark(small_settings, tmp_path, task_lm=lms[0], proposer_lm=lms[1], display_progress=False)
    changed = BenchmarkSettings(**{**small_settings.to_dict(), "num_candidates": 3})
    with pytest.raises(ValueError, match="num_candidates"):
        run_benchmark(changed, tmp_path, task_lm=lms[0], proposer_lm=lms[1], display_progress=False)
    more_users = BenchmarkSettings(**{**small_settings.to_dict(), "users": 3, "methods": ("floor",)})
    run_benchmark(more_users, tmp_path, task_lm=lms[0], proposer_lm=lms[1], display_progress=False)


def test_methods_that_cannot_run_are_reported_not_dropped(tmp_path, hwang_file, lms):
    settings = BenchmarkSettings(dataset="hwang", data_path=str(hwang_file), users=1, n_train=1, n_test=4,
                                 methods=("floor", "fermi", "fermi_best", "mipro", "gepa"), num_iterations=1,
                                 num_candidates=1)
    report = run_benchmark(settings, tmp_path, task_lm=lms[0], proposer_lm=lms[1], display_progress=False)
    status = {r.method: r.status for r in report.results}
    assert status == {"floor": "ok", "fermi": "cannot_run", "fermi_best": "cannot_run", "mipro": "cannot_run",
                      "gepa": "ok"}
    reasons = {r.method: r.reason for r in report.results}
    assert "at least 2 training answers" in reasons["fermi"]
    markdown = (tmp_path / "report.md").read_text()
    assert "## Not run" in markdown and "cannot_run" in markdown and "MIPROv2" in markdown


def test_a_failing_method_is_recorded_and_retried_on_resume(tmp_path, small_settings, lms, monkeypatch):
    def broken(task):
        raise RuntimeError(f"boom with private text {task.split.profile}")

    monkeypatch.setitem(methods_module.JOBS, "copro", broken)
    report = run_benchmark(small_settings, tmp_path, task_lm=lms[0], proposer_lm=lms[1], display_progress=False)
    failed = [r for r in report.results if r.method == "copro"]
    assert [r.status for r in failed] == ["failed", "failed"]
    assert failed[0].reason == "RuntimeError (see the run's log)"  # the message may quote user data: not stored
    assert report.summary["copro"].users_ok == 0 and len(report.summary["copro"].not_run) == 2

    monkeypatch.undo()
    again = run_benchmark(small_settings, tmp_path, task_lm=lms[0], proposer_lm=lms[1], display_progress=False)
    assert [r.status for r in again.results if r.method == "copro"] == ["ok", "ok"]


def test_users_with_too_few_answers_are_listed_as_excluded(tmp_path, small_settings, lms):
    settings = BenchmarkSettings(**{**small_settings.to_dict(), "users": 10, "methods": ("floor",)})
    report = run_benchmark(settings, tmp_path, task_lm=lms[0], proposer_lm=lms[1], display_progress=False)
    assert [s.user_id for s in report.users.splits] == ["guns-1", "science-2", "economy-3", "media-4"]
    assert [e.user_id for e in report.users.excluded] == ["short-9"]
    assert "short-9 (only 5 valid answers" in (tmp_path / "report.md").read_text()


def test_the_report_can_be_rebuilt_without_lms(tmp_path, small_settings, lms):
    first = run_benchmark(small_settings, tmp_path, task_lm=lms[0], proposer_lm=lms[1], command="original",
                          display_progress=False)
    (tmp_path / "report.md").unlink()
    rebuilt = rebuild_report(tmp_path)
    assert [s.to_dict() for s in rebuilt.summaries] == [s.to_dict() for s in first.summaries]
    markdown = (tmp_path / "report.md").read_text()
    assert "`original`" in markdown and "scripted/task" in markdown
