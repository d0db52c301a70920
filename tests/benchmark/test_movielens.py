"""The benchmark on the MovieLens tasks with instant scripted LMs, on 2 SYNTHETIC MovieLens-shaped users per task
(tests/synthetic_movielens.py; not real data): the methods that run, MAE/RMSE in the report, refusals."""

import csv
import json
from statistics import fmean

import pytest

from fermi_dspy.data import LAMP2_TAGS, load_users
from programs.benchmark import BenchmarkSettings, rebuild_report, run_benchmark
from programs.benchmark.budgets import fermi_budget
from programs.benchmark.cli import build_parser, main, settings_from_args
from programs.benchmark.settings import TASK_METHODS
from programs.floor import whole_star
from programs.tasks import RATING, TAGGING
from tests.benchmark.conftest import calls
from tests.synthetic_movielens import write_synthetic_movielens

RATING_DEFAULTS = ("floor", "zero_shot", "fewshot", "opro", "gepa", "fermi", "fermi_best")


@pytest.fixture
def folder(tmp_path):
    return write_synthetic_movielens(tmp_path / "data")


def small(dataset, folder, **overrides):
    return BenchmarkSettings.for_data(dataset, **{
        "data_path": str(folder), "users": 5, "n_train": 6, "n_test": 4, "num_iterations": 2, "num_candidates": 2,
        "memory_size": 3, "task_lm": "scripted", "proposer_lm": "scripted", **overrides})


def user_splits(root):
    """Each user's train/test movie ids, as splits.json records them."""
    return {u["user_id"]: u for u in json.loads((root / "splits.json").read_text())["users"]}


def test_rating_benchmark_runs_its_methods_and_reports_mae_and_rmse(tmp_path, folder, engines):
    settings = small("movielens-rating", folder)
    assert settings.methods == RATING_DEFAULTS
    report = run_benchmark(settings, tmp_path / "run", command="pytest", display_progress=False)
    results = {(r.user_id, r.method): r for r in report.results}
    assert {u for u, _ in results} == {"1", "2"} and len(results) == 2 * len(RATING_DEFAULTS)
    assert all(r.status == "ok" and r.stray_calls == 0 for r in results.values()), [
        (r.method, r.reason) for r in results.values() if not r.ok]
    budget = fermi_budget(settings)
    ratings = {r.user_id: dict(zip(r.example_ids, (e.rating for e in r.examples), strict=True))
               for r in load_users("movielens-rating", folder)}
    for (_, method), r in results.items():
        assert 0.0 <= r.mae <= r.rmse <= 4.0 and r.accuracy == pytest.approx(1 - r.mae / 4.5)
        assert r.details["valid_answers"] == 4 and r.n_test == 4
        assert (r.test.usage.calls == 0) == (method == "floor")
        if method in ("fermi", "opro"):
            assert r.compile_task.usage.calls == budget.task_calls
    for user_id, split in user_splits(tmp_path / "run").items():
        own = ratings[user_id]
        mean = fmean(own[i] for i in split["train_ids"])
        floor = results[(user_id, "floor")]
        assert floor.mae == pytest.approx(fmean(abs(own[i] - whole_star(mean)) for i in split["test_ids"]))
        assert floor.details["mae_unrounded"] == pytest.approx(fmean(abs(own[i] - mean) for i in split["test_ids"]))
    assert results[("2", "floor")].mae == 0.0 and results[("2", "floor")].correct == 4  # the harsh critic: all 1s

    summary = report.summary
    assert summary["fermi"].mae.n == 2 and summary["floor"].floor_unrounded["mae"].n == 2
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "Test score [95% CI] | MAE, stars ↓ [95% CI] | RMSE, stars ↓ [95% CI]" in markdown
    assert "## Per-user test MAE (stars, lower is better)" in markdown and "from the unrounded mean" in markdown
    rows = list(csv.DictReader((tmp_path / "run" / "summary.csv").open()))
    assert [r["method"] for r in rows] == list(RATING_DEFAULTS)
    assert all(float(r["mae_ci_low"]) <= float(r["mae"]) <= float(r["mae_ci_high"]) for r in rows)
    assert rows[0]["floor_mae_unrounded"] != "" and rows[1]["floor_mae_unrounded"] == ""
    per_user = list(csv.DictReader((tmp_path / "run" / "results.csv").open()))
    assert len(per_user) == 14 and all(r["mae"] and r["rmse"] for r in per_user)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["summary"][0]["mae"]["users"] == 2

    for path in (tmp_path / "run").rglob("*"):  # ids and numbers only: no title, rating text or prompt
        if path.is_file() and path.suffix in (".json", ".csv", ".md"):
            assert "Synthetic Film" not in path.read_text(), path.name

    before = calls(engines)
    again = rebuild_report(tmp_path / "run")
    assert calls(engines) == before and [s.mae for s in again.summaries] == [s.mae for s in report.summaries]


def test_tagging_benchmark_runs_its_methods_with_accuracy_and_the_most_frequent_tag(tmp_path, folder, engines):
    settings = small("movielens-tag", folder)
    assert settings.methods == (*RATING_DEFAULTS, "fermi_soft")
    report = run_benchmark(settings, tmp_path / "run", display_progress=False)
    assert len(report.results) == 2 * len(settings.methods)
    assert all(r.status == "ok" and r.mae is None and 0.0 <= r.accuracy <= 1.0 for r in report.results), [
        (r.method, r.reason) for r in report.results if not r.ok]
    tags = {r.user_id: dict(zip(r.example_ids, (e.tag for e in r.examples), strict=True))
            for r in load_users("movielens-tag", folder)}
    floors = {r.user_id: r for r in report.results if r.method == "floor"}
    for user_id, split in user_splits(tmp_path / "run").items():
        train = [tags[user_id][i] for i in split["train_ids"]]
        favourite = max(LAMP2_TAGS, key=train.count)
        expected = fmean(tags[user_id][i] == favourite for i in split["test_ids"])
        assert floors[user_id].accuracy == pytest.approx(expected) and floors[user_id].total_calls == 0
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "Test accuracy [95% CI]" in markdown and "MAE" not in markdown
    assert "mae" not in next(csv.DictReader((tmp_path / "run" / "summary.csv").open()))


@pytest.mark.parametrize(("dataset", "method"), [("movielens-rating", "profile_prompt"), ("movielens-rating", "copro"),
                                                  ("movielens-rating", "fermi_soft"), ("movielens-tag", "mipro"),
                                                  ("movielens-tag", "fermi_no_profile")])
def test_methods_a_task_cannot_run_are_refused_naming_the_task_and_what_works(dataset, method):
    with pytest.raises(ValueError, match=f"task \\(--data {dataset}\\) cannot run {method}; the methods that work") \
            as refused:
        BenchmarkSettings(dataset=dataset, methods=("fermi", method))
    assert ", ".join(TASK_METHODS[RATING if "rating" in dataset else TAGGING]) in str(refused.value)


def test_the_command_line_takes_each_tasks_split_and_methods(tmp_path, folder, capsys):
    def parse(*argv):
        return settings_from_args(build_parser().parse_args(["run", "--out", "x", *argv]))

    rating = parse("--data", "movielens-rating")
    assert (rating.n_train, rating.n_test, rating.methods) == (10, 10, RATING_DEFAULTS)
    tagging = parse("--data", "movielens-tag", "--methods", "all", "--skip", "gepa", "--test", "5")
    assert (tagging.n_train, tagging.n_test) == (8, 5) and "gepa" not in tagging.methods
    assert tagging.methods == tuple(m for m in TASK_METHODS[TAGGING] if m != "gepa")
    assert (parse().n_train, parse().n_test) == (10, 20)  # the opinion benchmark's defaults are unchanged

    args = build_parser().parse_args(["run", "--scripted", "--out", str(tmp_path / "run"), "--data", "movielens-tag",
                                      "--data-path", str(folder), "--methods", "fermi,copro"])
    assert main(args) == 1
    assert "movielens-tag task (--data movielens-tag) cannot run copro" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
