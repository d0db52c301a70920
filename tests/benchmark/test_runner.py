"""The benchmark as a run: the same splits for every method, one file per (user, method), resume per method,
methods that cannot run or fail, excluded users, and re-rendering a report (also of a pre-run benchmark directory)."""

import csv
import json
import shutil
from pathlib import Path

import pytest

import programs.benchmark.methods as methods_module
from fermi_dspy.cli import main as fermi_dspy_main
from programs.benchmark import rebuild_report, run_benchmark
from programs.benchmark.settings import BenchmarkSettings
from tests.benchmark.conftest import calls

COMMITTED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "hwang-qwen0.5b"


def test_every_method_gets_the_same_split(tmp_path, small_settings, monkeypatch):
    seen = {}
    for name, job in list(methods_module.JOBS.items()):
        def spy(task, job=job, name=name):
            seen[(task.user.user_id, name)] = ([e.question for e in task.user.train], [e.question for e in
                                                                                      task.user.test])
            return job(task)
        monkeypatch.setitem(methods_module.JOBS, name, spy)
    run_benchmark(small_settings, tmp_path, display_progress=False)

    manifest = {u["user_id"]: u for u in json.loads((tmp_path / "splits.json").read_text())["users"]}
    assert len(manifest) == 2 and {u for u, _ in seen} == set(manifest)
    for user_id in manifest:
        [(train, test)] = {(tuple(a), tuple(b)) for (u, _), (a, b) in seen.items() if u == user_id}
        assert len(train) == 6 and len(test) == 4 and not set(train) & set(test)
    assert len({name for _, name in seen}) == len(methods_module.JOBS)


def test_each_result_is_its_own_file_and_a_rerun_resumes_per_method(tmp_path, small_settings, engines):
    without = BenchmarkSettings(**{**small_settings.to_dict(), "methods": ("floor", "zero_shot", "fermi")})
    run_benchmark(without, tmp_path, display_progress=False)
    files = sorted(p.name for p in (tmp_path / "users").rglob("*.json") if p.name != "result.json")
    assert files == sorted(["fermi.json", "floor.json", "zero_shot.json"] * 2)
    first = calls(engines)

    again = run_benchmark(without, tmp_path, display_progress=False)
    assert calls(engines) == first  # nothing re-run
    with_copro = BenchmarkSettings(**{**without.to_dict(), "methods": ("floor", "zero_shot", "copro", "fermi")})
    third = run_benchmark(with_copro, tmp_path, display_progress=False)
    copro = [r for r in third.results if r.method == "copro"]
    assert [r.status for r in copro] == ["ok", "ok"]
    assert calls(engines) - first == sum(r.total_calls for r in copro) > 0  # only the new method ran
    kept = {(r.user_id, r.method): r.to_dict() for r in again.results}
    assert all(kept[(r.user_id, r.method)] == r.to_dict() for r in third.results if r.method != "copro")


def test_a_rerun_with_other_result_settings_is_refused(tmp_path, small_settings):
    run_benchmark(small_settings, tmp_path, display_progress=False)
    changed = BenchmarkSettings(**{**small_settings.to_dict(), "num_candidates": 3})
    with pytest.raises(ValueError, match="num_candidates: 2 -> 3"):
        run_benchmark(changed, tmp_path, display_progress=False)
    assert json.loads((tmp_path / "settings.json").read_text())["num_candidates"] == 2  # nothing was written
    more_users = BenchmarkSettings(**{**small_settings.to_dict(), "users": 3, "methods": ("floor",)})
    report = run_benchmark(more_users, tmp_path, display_progress=False)
    assert len(report.users.user_ids) == 3 and {r.method for r in report.results} == {"floor"}


def test_methods_that_cannot_run_are_reported_not_dropped(tmp_path, hwang_file, small_settings):
    settings = BenchmarkSettings(**{**small_settings.to_dict(), "users": 1, "n_train": 1,
                                    "methods": ("floor", "fermi", "fermi_best", "mipro", "gepa"),
                                    "num_iterations": 1, "num_candidates": 1})
    report = run_benchmark(settings, tmp_path, display_progress=False)
    status = {r.method: r.status for r in report.results}
    assert status == {"floor": "ok", "fermi": "cannot_run", "fermi_best": "cannot_run", "mipro": "cannot_run",
                      "gepa": "ok"}
    reasons = {r.method: r.reason for r in report.results}
    assert "at least 2 training answers" in reasons["fermi"]
    markdown = (tmp_path / "report.md").read_text()
    assert "## Not run" in markdown and "cannot_run" in markdown and "MIPROv2" in markdown


def test_a_failing_method_is_recorded_and_only_it_is_retried_on_resume(tmp_path, small_settings, engines,
                                                                        monkeypatch):
    def broken(task):
        raise RuntimeError(f"boom with private text {task.user.profile}")

    monkeypatch.setitem(methods_module.JOBS, "copro", broken)
    report = run_benchmark(small_settings, tmp_path, display_progress=False)
    failed = [r for r in report.results if r.method == "copro"]
    assert [r.status for r in failed] == ["failed", "failed"]
    assert failed[0].reason == "RuntimeError (see the run's log)"  # the message may quote user data: not stored
    assert report.summary["copro"].users_ok == 0 and len(report.summary["copro"].not_run) == 2

    monkeypatch.undo()
    before = calls(engines)
    again = run_benchmark(small_settings, tmp_path, display_progress=False)
    copro = [r for r in again.results if r.method == "copro"]
    assert [r.status for r in copro] == ["ok", "ok"]
    assert calls(engines) - before == sum(r.total_calls for r in copro)


def test_users_with_too_few_answers_are_listed_as_excluded(tmp_path, small_settings):
    settings = BenchmarkSettings(**{**small_settings.to_dict(), "users": 10, "methods": ("floor",)})
    report = run_benchmark(settings, tmp_path, display_progress=False)
    assert report.users.user_ids == ["guns-1", "science-2", "economy-3", "media-4"]
    assert [e["user_id"] for e in report.users.excluded] == ["short-9"]
    assert "short-9 (only 5 valid answers" in (tmp_path / "report.md").read_text()


def test_the_report_can_be_rebuilt_without_lms(tmp_path, small_settings):
    first = run_benchmark(small_settings, tmp_path, command="original", display_progress=False)
    (tmp_path / "report.md").unlink()
    rebuilt = rebuild_report(tmp_path)
    assert [s.to_dict() for s in rebuilt.summaries] == [s.to_dict() for s in first.summaries]
    markdown = (tmp_path / "report.md").read_text()
    assert "`original`" in markdown and "scripted/task" in markdown


def test_a_benchmark_directory_from_before_benchmarks_were_runs_still_renders(tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(COMMITTED, old)
    for name in ("report.md", "summary.csv", "results.csv", "plot.png"):
        (old / name).unlink()
    assert fermi_dspy_main(["bench", "report", "--out", str(old)]) == 0
    assert "| Fermi (Retrieval-of-Prompt) |" in capsys.readouterr().out
    for name in ("summary.csv", "results.csv"):  # the same numbers as the old code rendered
        assert list(csv.reader((old / name).open())) == list(csv.reader((COMMITTED / name).open()))
    table = (COMMITTED / "report.md").read_text().split("## Results")[1].split("##")[0]
    assert table in (old / "report.md").read_text()
    assert json.loads((old / "report.json").read_text())["command"] == json.loads(
        (COMMITTED / "report.json").read_text())["command"]
    with pytest.raises(ValueError, match="bench report"):
        run_benchmark(BenchmarkSettings.from_dict(json.loads((old / "settings.json").read_text())), old)


def test_the_report_counts_fermis_rejected_proposals_by_reason(tmp_path):
    """On the committed 1.5B run (the 0fd59ce benchmark, whose Fermi details hold the hygiene's counts)."""
    partial = tmp_path / "partial"
    shutil.copytree(COMMITTED.parent / "hwang-qwen1.5b", partial)
    assert fermi_dspy_main(["bench", "report", "--out", str(partial)]) == 0
    section = (partial / "report.md").read_text().split("## Proposals rejected")[1].split("##")[0]
    rows = {line.split(" | ")[0].strip("| "): line for line in section.splitlines() if line.startswith("| Fermi")}
    assert "Fermi (Retrieval-of-Prompt)" in rows and "meta_prompt_structure" in section
    assert "Fermi (single best prompt)" not in rows  # it reuses Fermi's compile: its rejections are Fermi's
    details = [json.loads(p.read_text()).get("details", {}) for p in partial.glob("users/*/fermi.json")]
    total = sum(sum(d.get("proposals_rejected", {}).values()) for d in details)
    assert f"| {len(details)} | {total} |" in rows["Fermi (Retrieval-of-Prompt)"]
