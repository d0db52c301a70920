"""The main job on the MovieLens tasks, end to end with instant scripted LMs, on 2 SYNTHETIC MovieLens-shaped users
per task (tests/synthetic_movielens.py; not real data): the baselines, MAE/RMSE for ratings, the report, resume."""

import argparse
import csv
import json
import re
from statistics import fmean

import pytest

from fermi_dspy.data import LAMP2_TAGS
from fermi_dspy.programs import MovieRating, MovieTagging
from fermi_dspy.runs import prepare_users
from fermi_dspy.testing import instant_engine
from programs.floor import whole_star
from programs.main_job import (
    MainJob,
    MainJobSettings,
    add_arguments,
    load_personalized,
    run_main_job,
    settings_from_args,
)
from tests.synthetic_movielens import write_synthetic_movielens

SPEC = "factory:fermi_dspy.testing:instant_lm"
FEWSHOT_BLOCK = re.compile(r"Title: (.*)\n\s*Year: .*\n\s*Genres: .*\n\s*The person's (?:rating|tag): (.*)")


@pytest.fixture
def folder(tmp_path):
    return write_synthetic_movielens(tmp_path / "data")


@pytest.fixture
def engines():
    found = instant_engine("task"), instant_engine("proposer")
    for engine in found:
        engine.calls.clear()
    return found


def settings(dataset, folder, **overrides):
    return MainJobSettings.for_data(dataset, data_path=str(folder), **{
        "users": 5, "n_train": 6, "n_test": 4, "num_iterations": 2, "num_candidates": 2, **overrides})


def splits(config):
    users, _ = prepare_users(config.dataset, data_path=config.data_path, on_bad_record="skip", n_train=config.n_train,
                             n_test=config.n_test, seed=config.seed)
    return {u.user_id: u for u in users}


def fewshot_blocks(engine):
    """(title, answer) pairs shown by each few-shot prompt the task LM received."""
    return [FEWSHOT_BLOCK.findall(call.system) for call in engine.calls if "The person's" in call.system]


def test_rating_run_reports_mae_rmse_and_score_for_fermi_and_the_three_baselines(tmp_path, folder, engines):
    config = settings("movielens-rating", folder)
    report = run_main_job(config, tmp_path / "run", task_lm=SPEC, display_progress=False)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["task"] == "movielens-rating" and saved["metrics"] == ["mae", "rmse", "score"]
    assert list(saved["methods"]) == ["floor", "zero_shot", "fewshot", "fermi"]
    assert [u["user_id"] for u in saved["users"]] == ["1", "2"]  # user 3 has 5 ratings, fewer than 6 + 4

    users = splits(config)
    for row in saved["users"]:
        assert row["test_calls"] == {"floor": 0, "zero_shot": 4, "fewshot": 4, "fermi": 4}
        assert row["answered"] == dict.fromkeys(row["answered"], 4)
        for method in saved["methods"]:
            assert 0.0 <= row["mae"][method] <= row["rmse"][method] <= 4.0  # whole stars 1-5 vs 1.0-5.0 here
            assert row["score"][method] == pytest.approx(1 - row["mae"][method] / 4.5)  # no answer missing
        user = users[row["user_id"]]
        golds = [e.rating for e in user.test]
        mean = fmean(e.rating for e in user.train)
        assert row["mae"]["floor"] == pytest.approx(fmean(abs(g - whole_star(mean)) for g in golds))
        assert row["floor_unrounded"]["mae"] == pytest.approx(fmean(abs(g - mean) for g in golds))
    harsh = next(r for r in saved["users"] if r["user_id"] == "2")
    assert harsh["mae"]["floor"] == 0.0 and harsh["score"]["floor"] == 1.0  # rates everything 1: so does its floor

    overall = saved["overall"]
    assert set(overall) == {"floor", "zero_shot", "fewshot", "fermi"}
    for summary in overall.values():
        assert summary["users"] == 2
        for metric in ("mae", "rmse", "score"):
            low, high = summary[f"ci95_{metric}"]
            assert low <= summary[f"mean_{metric}"] <= high
    assert overall["floor"]["mean_mae_unrounded"] is not None

    # Retrieved few-shot shows the user's own training ratings only, never a test movie's.
    shown = fewshot_blocks(engines[0])
    assert len(shown) == 2 * 4 and all(len(blocks) == 3 for blocks in shown)
    train_pairs = [{(e.title, f"{e.rating:g}") for e in u.train} for u in users.values()]
    assert all(any(set(blocks) <= pairs for pairs in train_pairs) for blocks in shown)

    # Fermi had no profile: it started from the plain task prompt, and its proposer was told so.
    details = json.loads((tmp_path / "run" / "users" / "1" / "details.json").read_text())
    assert details["iterations"][0]["candidates"][0]["prompt"] == ""
    assert all("(no profile given)" in call.user for call in engines[1].calls)

    rows = list(csv.DictReader((tmp_path / "run" / "results.csv").open()))
    assert len(rows) == 8 and {"mae", "rmse", "score", "answered", "mae_unrounded"} <= set(rows[0])
    assert "MAE (stars), lower is better" in report["table"] and "floor, unrounded mean" in report["table"]
    assert isinstance(load_personalized(tmp_path / "run", "1").program, MovieRating)

    before = len(engines[0].calls) + len(engines[1].calls)
    again = run_main_job(config, tmp_path / "run", task_lm=SPEC, display_progress=False)
    assert len(engines[0].calls) + len(engines[1].calls) == before and again["overall"] == overall


def test_tagging_run_reports_accuracy_with_the_most_frequent_tag_floor(tmp_path, folder, engines):
    config = settings("movielens-tag", folder)
    report = run_main_job(config, tmp_path / "run", task_lm=SPEC, display_progress=False)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["task"] == "movielens-tag" and saved["metrics"] == ["accuracy"]
    assert [u["user_id"] for u in saved["users"]] == ["1", "2"]  # user 3 tagged 3 movies
    users = splits(config)
    for row in saved["users"]:
        assert row["test_calls"] == {"floor": 0, "zero_shot": 4, "fewshot": 4, "fermi": 4}
        assert all(0.0 <= a <= 1.0 for a in row["accuracy"].values())
        user = users[row["user_id"]]
        tags = [e.tag for e in user.train]
        favourite = max(LAMP2_TAGS, key=tags.count)  # ties: the tag listed first
        assert row["accuracy"]["floor"] == pytest.approx(fmean(e.tag == favourite for e in user.test))
    assert set(saved["overall"]) == {"floor", "zero_shot", "fewshot", "fermi"}
    assert all(set(s) == {"mean_accuracy", "ci95", "users"} for s in saved["overall"].values())
    shown = fewshot_blocks(engines[0])
    assert shown and all(answer in ("sci-fi", "comedy", "romance") for blocks in shown for _, answer in blocks)
    rows = list(csv.DictReader((tmp_path / "run" / "results.csv").open()))
    assert len(rows) == 8 and "mae" not in rows[0]
    assert "LM-free floor" in report["table"] and "retrieved few-shot" in report["table"]
    assert isinstance(load_personalized(tmp_path / "run", "2").program, MovieTagging)


def test_each_task_has_its_own_defaults_and_an_opinion_run_keeps_its_identity():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    sizes = {data: settings_from_args(parser.parse_args(["--data", data]))
             for data in ("panelists", "movielens-rating", "movielens-tag")}
    assert [(s.users, s.n_train, s.n_test) for s in sizes.values()] == [(3, 10, 12), (3, 10, 10), (4, 8, 8)]
    assert sizes["movielens-rating"].fermi()["metric"].__name__ == "rating_score"
    assert sizes["movielens-tag"].fermi()["retrieval_fields"] == ["title", "genres"]
    assert sizes["panelists"].fermi() == {"num_iterations": 2, "num_candidates": 2, "memory_size": 5,
                                          "retrieval_fields": ["question"]}
    overridden = settings_from_args(parser.parse_args(["--data", "movielens-tag", "--users", "2", "--test", "5"]))
    assert (overridden.users, overridden.n_train, overridden.n_test) == (2, 8, 5)
    described = MainJob(fermi=sizes["panelists"].fermi()).describe()
    assert described["baselines"] == ["zero_shot", "profile_prompt"] and "task" not in described
    assert MainJob("movielens-rating").describe()["task"] == "movielens-rating"


def test_bad_rating_lines_are_skipped_counted_and_listed_with_their_line(tmp_path, engines):
    folder = write_synthetic_movielens(tmp_path / "data", extra_ratings=["2,99,4.0,5000", "2,5,7,5001", "x,1,3.0,1"])
    config = settings("movielens-rating", folder, users=1, num_iterations=1)
    report = run_main_job(config, tmp_path / "run", task_lm=SPEC, display_progress=False)
    assert report["data"]["problems_skipped"] == 3 and report["users"][0]["n_test"] == 4
    listed = json.loads((tmp_path / "run" / "input_problems.json").read_text())["bad_records"]
    assert [(p["line"], p["kind"]) for p in listed] == [(46, "unknown_item"), (47, "invalid_field"),
                                                        (48, "invalid_field")]  # after the 45 good rating lines
    assert all(p["file"].endswith("ratings.csv.gz") for p in listed)
