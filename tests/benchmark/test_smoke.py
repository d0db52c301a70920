"""Smoke test: every method on one user with scripted LMs, in seconds; the outputs and their bookkeeping."""

import csv
import importlib.util
import json
import time
from pathlib import Path

from programs.benchmark import METHOD_ORDER, run_benchmark
from programs.benchmark.budgets import copro_config, fermi_budget
from tests.benchmark.conftest import SECRET_IDEOLOGY, SECRET_PARTY

HAS_OPTUNA = importlib.util.find_spec("optuna") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def test_every_method_runs_on_one_user_in_seconds(tmp_path, small_settings, engines):
    task, proposer = engines
    settings = small_settings.__class__(**{**small_settings.to_dict(), "users": 1, "methods": METHOD_ORDER})
    started = time.perf_counter()
    report = run_benchmark(settings, tmp_path, command="pytest", display_progress=False)
    assert time.perf_counter() - started < 30

    results = {r.method: r for r in report.results}
    assert list(results) == list(METHOD_ORDER)
    if not HAS_OPTUNA:  # MIPROv2 needs optuna (the bench extra): its failure is recorded, the rest runs
        assert results.pop("mipro").reason.startswith("ImportError")
    assert all(r.status == "ok" and 0.0 <= r.accuracy <= 1.0 and r.n_test == 4 for r in results.values())
    assert all(r.stray_calls == 0 for r in results.values())

    # Calls: the floor makes none; every LM method answers each test question once; budgets are as configured.
    assert results["floor"].total_calls == 0 and results["floor"].details == {"valid_answers": 4}
    assert all(0 <= r.details["valid_answers"] <= 4 for r in results.values())
    assert all(results[m].test.usage.calls == 4 for m in results if m != "floor")
    budget = fermi_budget(settings)
    for method in ("fermi", "fermi_no_profile", "opro"):
        assert results[method].compile_task.usage.calls == budget.task_calls
        assert results[method].compile_proposer.usage.calls == budget.proposer_calls
    copro = copro_config(settings)
    assert results["copro"].compile_task.usage.calls == copro.breadth * copro.depth * settings.n_train
    assert results["copro"].compile_proposer.usage.calls == copro.breadth * copro.depth - 1
    assert results["fermi_best"].shared_compile == "fermi"
    assert results["fermi_best"].compile_task == results["fermi"].compile_task

    # Every engine request is counted exactly once, under one role (fermi_best repeats fermi's compile).
    counted_task = sum(r.compile_task.usage.calls + r.test.usage.calls for r in results.values()
                       if r.shared_compile is None) + results["fermi_best"].test.usage.calls
    counted_proposer = sum(r.compile_proposer.usage.calls for r in results.values() if r.shared_compile is None)
    assert counted_task == len(task.calls)
    assert counted_proposer == len(proposer.calls)

    for name in ("report.md", "report.json", "summary.csv", "results.csv", "splits.json", "settings.json",
                 "lms.json", *(["plot.png"] if HAS_MATPLOTLIB else [])):
        assert (tmp_path / name).stat().st_size > 0
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [row["method"] for row in rows] == list(METHOD_ORDER)
    assert len(list(csv.DictReader((tmp_path / "results.csv").open()))) == len(METHOD_ORDER)
    markdown = (tmp_path / "report.md").read_text()
    assert "Fermi (Retrieval-of-Prompt)" in markdown and "`pytest`" in markdown and "scripted/task" in markdown
    assert "Valid answers" in markdown
    routed = results["fermi"].details["test_routed_past_best"]
    assert f"Retrieval-of-Prompt answered {routed} of 4 test questions (1 user)" in markdown
    assert json.loads((tmp_path / "report.json").read_text())["settings"]["n_train"] == 6


def test_outputs_hold_no_profile_answer_or_prompt(tmp_path, small_settings):
    run_benchmark(small_settings, tmp_path / "run", display_progress=False)
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".csv", ".md"):
            text = path.read_text()
            for secret in (SECRET_PARTY, SECRET_IDEOLOGY, "Strongly agree", "Do you agree with statement",
                           "Answer as this person would"):
                assert secret not in text, f"{secret!r} leaked into {path.name}"


def test_keep_programs_saves_each_compiled_program_apart_from_its_result(tmp_path, small_settings):
    run_benchmark(small_settings, tmp_path / "run", display_progress=False, keep_programs=True)
    user_dir = next((tmp_path / "run" / "users").iterdir())
    fermi = json.loads((user_dir / "fermi.program.json").read_text())
    assert "Answer as this person would" in json.dumps(fermi)  # the learned prompts, to read
    best = json.loads((user_dir / "fermi_best.program.json").read_text())
    assert best["router"]["selection"] == "best" != fermi["router"]["selection"]  # the same compile, best prompt
    assert best["router"]["prompts"] == fermi["router"]["prompts"]
    assert "Answer as this person would" not in (user_dir / "fermi.json").read_text()  # results stay text-free
    assert "*.program.json" in (Path(__file__).parents[2] / ".gitignore").read_text().split()


def test_a_report_rendered_later_names_the_command_and_commit_that_produced_the_results(tmp_path, small_settings,
                                                                                       monkeypatch):
    from programs.benchmark import job, provenance, report

    monkeypatch.setattr(provenance, "git_commit", lambda: "aaaa111")
    run_benchmark(small_settings, tmp_path, command="fermi-dspy bench run --users 2", display_progress=False)
    (tmp_path / "report.json").unlink()  # as for a run stopped before its end, which writes no report
    invocations = json.loads((tmp_path / "invocations.json").read_text())
    assert [(i["command"], i["git_commit"]) for i in invocations] == [("fermi-dspy bench run --users 2", "aaaa111")]

    assert invocations[0]["users_run"] == 2 and invocations[0]["lm_calls"] > 0

    monkeypatch.setattr(provenance, "git_commit", lambda: "cccc333")
    run_benchmark(small_settings, tmp_path, command="fermi-dspy bench run --users 2", display_progress=False)
    assert json.loads((tmp_path / "invocations.json").read_text())[-1]["lm_calls"] == 0  # nothing left to do
    (tmp_path / "report.json").unlink()
    monkeypatch.setattr(report, "describe_environment", lambda: {"git_commit": "bbbb222"})
    job.rebuild_report(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "`fermi-dspy bench run --users 2`" in markdown
    assert "results by git aaaa111; rendered at git bbbb222" in markdown  # cccc333 answered nobody

    (tmp_path / "invocations.json").write_text("{not json")
    job.rebuild_report(tmp_path)  # a damaged record is ignored, with a warning
    assert "was not recorded" in (tmp_path / "report.md").read_text()


def test_a_user_stopped_partway_keeps_its_finished_methods_and_runs_only_the_rest(tmp_path, small_settings, engines,
                                                                                  monkeypatch):
    from fermi_dspy.runs.errors import UserAbortError
    from programs.benchmark.methods import JOBS
    from tests.benchmark.conftest import calls

    methods = ("floor", "zero_shot", "profile_prompt", "opro", "fermi", "fermi_best")
    settings = small_settings.__class__(**{**small_settings.to_dict(), "users": 1, "methods": methods})
    real = dict(JOBS)

    def broken(task):
        raise UserAbortError("the endpoint went away", "APIConnectionError")

    def crashing(task):
        raise RuntimeError("a bug in one method")

    monkeypatch.setitem(JOBS, "opro", crashing)  # recorded as failed: not kept, run again
    monkeypatch.setitem(JOBS, "fermi", broken)  # ends the user's attempt: nothing is committed
    run_benchmark(settings, tmp_path, display_progress=False, keep_programs=True)
    user_dir = next((tmp_path / "users").iterdir())
    assert not (user_dir / "result.json").exists()
    checkpoint = json.loads((user_dir / "checkpoint.json").read_text())["state"]
    kept = checkpoint["methods"]
    assert set(kept) == {"floor", "zero_shot", "profile_prompt", "opro"} and kept["opro"]["status"] == "failed"
    assert checkpoint["programs"]  # saved with the methods, for a run that keeps programs

    monkeypatch.setitem(JOBS, "opro", real["opro"])
    monkeypatch.setitem(JOBS, "fermi", real["fermi"])
    before = calls(engines)
    report = run_benchmark(settings, tmp_path, display_progress=False)  # without --keep-programs now
    results = {r.method: r for r in report.results}
    assert set(results) == set(methods) and all(r.status == "ok" for r in results.values())
    # Only OPRO, Fermi's compile and the two Fermi methods' test answers were asked for again.
    again = results["opro"].total_calls + results["fermi"].total_calls + results["fermi_best"].test.usage.calls
    assert calls(engines) - before == again > 0
    assert results["zero_shot"].to_dict() == kept["zero_shot"]  # the stopped attempt's result, as it was
    assert not (user_dir / "checkpoint.json").exists()
    assert not list(user_dir.glob("*.program.json"))  # this run does not keep programs, restored ones included


def test_a_checkpoint_that_does_not_load_is_ignored(tmp_path, small_settings, engines, monkeypatch):
    from fermi_dspy.runs.errors import UserAbortError
    from programs.benchmark.methods import JOBS

    settings = small_settings.__class__(**{**small_settings.to_dict(), "users": 1,
                                           "methods": ("floor", "zero_shot", "fermi")})
    real_fermi = JOBS["fermi"]

    def broken(task):
        raise UserAbortError("the endpoint went away", "APIConnectionError")

    monkeypatch.setitem(JOBS, "fermi", broken)
    run_benchmark(settings, tmp_path, display_progress=False)
    path = next((tmp_path / "users").iterdir()) / "checkpoint.json"
    saved = json.loads(path.read_text())
    saved["state"]["methods"]["zero_shot"]["field_from_other_code"] = 1
    path.write_text(json.dumps(saved))
    monkeypatch.setitem(JOBS, "fermi", real_fermi)
    report = run_benchmark(settings, tmp_path, display_progress=False)
    assert {r.method: r.status for r in report.results} == {"floor": "ok", "zero_shot": "ok", "fermi": "ok"}
