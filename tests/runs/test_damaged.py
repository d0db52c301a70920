"""Damaged run directories: a lost or broken manifest, results from other settings, and partial result files are
caught on resume (refused, naming the difference and the fix, or redone with a logged reason), never a traceback."""

import json
import logging
import shutil

import pytest

from fermi_dspy.runs import ManifestMismatchError, estimate_users, personalize_users
from tests.runs import lms
from tests.runs.conftest import run_kwargs, user_results

THREE_ITERATIONS = {**lms.FERMI, "num_iterations": 3}




@pytest.mark.parametrize("damage", ["deleted", "truncated", "not a manifest"])
def test_a_damaged_manifest_over_results_refuses_a_resume_with_other_settings(users_file, tmp_path, damage):
    data, run_dir = users_file(2), tmp_path / "run"
    personalize_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs())
    manifest = run_dir / "manifest.json"
    if damage == "deleted":
        manifest.unlink()
    elif damage == "truncated":
        manifest.write_text(manifest.read_text()[:40])
    else:
        manifest.write_text("[]")
    before = manifest.read_bytes() if manifest.exists() else None

    lms.reset()
    with pytest.raises(ManifestMismatchError) as error:
        personalize_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs(fermi=THREE_ITERATIONS))
    message = str(error.value)
    assert "manifest.json" in message and "2 users" in message
    assert "job.fermi.num_iterations: 2 -> 3" in message  # named from the results themselves
    assert "new run directory" in message
    assert sum(lms.calls_by_user().values()) == 0
    assert (manifest.read_bytes() if manifest.exists() else None) == before  # nothing rewritten

    with pytest.raises(ManifestMismatchError, match=r"manifest\.json"):
        estimate_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs(fermi=THREE_ITERATIONS))


def test_a_damaged_manifest_is_rebuilt_only_on_request_and_only_from_matching_results(users_file, tmp_path):
    data, run_dir = users_file(2), tmp_path / "run"
    first = personalize_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs())
    (run_dir / "manifest.json").unlink()
    with pytest.raises(ManifestMismatchError, match="rebuild") as error:
        personalize_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs())
    assert "computed under the settings given now" in str(error.value)
    with pytest.raises(ManifestMismatchError, match="num_iterations"):
        personalize_users("hwang", data_path=data, run_dir=run_dir,
                          **run_kwargs(rebuild_manifest=True, fermi=THREE_ITERATIONS))
    assert not (run_dir / "manifest.json").exists()

    lms.reset()
    again = personalize_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs(rebuild_manifest=True))
    assert again.done == 2 and again.already_done == 2 and sum(lms.calls_by_user().values()) == 0
    assert again.usage["calls"] == first.usage["calls"]
    assert json.loads((run_dir / "manifest.json").read_text())["fingerprint"]


def test_a_result_computed_under_other_settings_is_refused_naming_the_difference(users_file, tmp_path):
    data = users_file(2)
    personalize_users("hwang", data_path=data, run_dir=tmp_path / "two", **run_kwargs())
    personalize_users("hwang", data_path=data, run_dir=tmp_path / "three", limit=1,
                      **run_kwargs(fermi=THREE_ITERATIONS))
    shutil.rmtree(tmp_path / "two" / "users" / "synthetic-1")
    shutil.copytree(tmp_path / "three" / "users" / "synthetic-1", tmp_path / "two" / "users" / "synthetic-1")
    lms.reset()
    with pytest.raises(ManifestMismatchError) as error:
        personalize_users("hwang", data_path=data, run_dir=tmp_path / "two", **run_kwargs())
    message = str(error.value)
    assert "synthetic-1" in message and "job.fermi.num_iterations: 3 -> 2" in message
    assert sum(lms.calls_by_user().values()) == 0


@pytest.mark.parametrize("damage", [
    "truncated",
    "parses but lacks usage",
    "no fingerprint",
    "not an object",
    "another user's",
])
def test_a_partial_or_malformed_result_is_redone_with_a_logged_reason(users_file, tmp_path, caplog, damage):
    data, run_dir = users_file(3), tmp_path / "run"
    personalize_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs())
    expected = user_results(run_dir)
    path = run_dir / "users" / "synthetic-2" / "result.json"
    result = json.loads(path.read_text())
    if damage == "truncated":
        path.write_text(path.read_text()[:100])
    elif damage == "parses but lacks usage":
        path.write_text(json.dumps({k: v for k, v in result.items() if k != "usage"}))
    elif damage == "no fingerprint":
        path.write_text(json.dumps({k: v for k, v in result.items() if k != "run_fingerprint"}))
    elif damage == "not an object":
        path.write_text("[1, 2]")
    else:
        path.write_text(json.dumps({**result, "user_id": "synthetic-3"}))

    lms.reset()
    caplog.set_level(logging.WARNING, logger="fermi_dspy.runs")
    again = personalize_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs())
    assert again.done == 3 and again.already_done == 2 and again.this_invocation["users_run"] == 1
    assert set(lms.calls_by_user()) == {"u2"}
    assert "synthetic-2" in caplog.text and "result.json" in caplog.text and "run again" in caplog.text
    assert "Traceback" not in caplog.text
    redone = user_results(run_dir)
    assert redone["synthetic-2"]["result"] == expected["synthetic-2"]["result"]
    assert redone["synthetic-2"]["program.json"] == expected["synthetic-2"]["program.json"]


def test_every_result_records_the_fingerprint_of_its_settings(users_file, tmp_path):
    personalize_users("hwang", data_path=users_file(2), run_dir=tmp_path / "run", **run_kwargs())
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    for path in (tmp_path / "run").glob("users/*/result.json"):
        result = json.loads(path.read_text())
        assert result["run_fingerprint"] == manifest["fingerprint"]
        assert result["run_identity"] == manifest["identity"]
