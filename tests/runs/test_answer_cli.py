"""`fermi-dspy answer`: one question or a JSONL batch from a finished run (SYNTHETIC users, scripted LMs)."""

import json

import pytest

from fermi_dspy.cli import main
from fermi_dspy.runs import ProgramStore, personalize_users
from tests.runs import lms
from tests.runs.conftest import run_kwargs


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("answer")
    data = lms.write_users_file(folder / "users.jsonl", 3)
    run_dir = folder / "run"
    assert personalize_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs()).done == 3
    return run_dir


def test_one_question_prints_the_answer_and_the_routed_prompt_with_the_runs_own_lm(finished_run, capsys):
    status = main(["answer", "--run-dir", str(finished_run), "--user", "synthetic-2", "--question",
                   "[u2] Do you support guns?", "--options", "Yes", "No"])
    row = json.loads(capsys.readouterr().out)
    assert status == 0 and row["answer"] in ("Yes", "No") and row["user_id"] == "synthetic-2"
    program = ProgramStore(finished_run)["synthetic-2"]
    assert row["prompt"] == program.prompts[row["prompt_index"]]
    assert row["prompt_index"] == program.route(question="[u2] Do you support guns?", options=["Yes", "No"])


def test_a_batch_keeps_the_row_order_marks_bad_rows_and_exits_3(finished_run, tmp_path, capsys):
    rows = [{"user_id": "synthetic-1", "question": "[u1] Do you support taxes?", "options": ["Yes", "No"]},
            {"user_id": "nobody", "question": "[u9] Do you support zoos?", "options": ["Yes", "No"]},
            {"question": "no user here", "options": ["Yes", "No"]},
            {"user": "synthetic-3", "question": "[u3] Do you support zoos?", "options": ["Yes", "No"], "tag": 7}]
    source, target = tmp_path / "rows.jsonl", tmp_path / "out" / "answers.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    status = main(["answer", "--run-dir", str(finished_run), "--input", str(source), "--output", str(target)])
    out = [json.loads(line) for line in target.read_text().splitlines()]
    assert status == 3 and "2 without an answer" in capsys.readouterr().out
    assert [r.get("question") for r in out] == [r["question"] for r in rows]
    assert out[0]["answer"] in ("Yes", "No") and isinstance(out[0]["prompt_index"], int) and "error" not in out[0]
    assert "no finished user 'nobody'" in out[1]["error"] and "names no user" in out[2]["error"]
    assert out[3]["answer"] in ("Yes", "No") and out[3]["tag"] == 7  # the row's own fields are kept


def test_a_batch_refuses_to_overwrite_and_resumes_after_the_rows_it_has(finished_run, tmp_path, capsys):
    rows = [{"user_id": f"synthetic-{n}", "question": f"[u{n}] Do you support bikes?", "options": ["Yes", "No"]}
            for n in (1, 2, 3)]
    source, target = tmp_path / "rows.jsonl", tmp_path / "answers.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    target.write_text(json.dumps({**rows[0], "answer": "Kept", "prompt_index": 0}) + "\n")
    args = ["answer", "--run-dir", str(finished_run), "--input", str(source), "--output", str(target)]
    assert main(args) == 1 and "--resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    out = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(out) == 3 and out[0]["answer"] == "Kept" and [r["user_id"] for r in out] == [r["user_id"] for r in rows]


@pytest.mark.parametrize(("extra", "message"), [
    ([], "give --user ID"),
    (["--input", "rows.jsonl"], "--input needs --output"),
    (["--user", "synthetic-1", "--output", "x.jsonl"], "--output and --resume go with --input"),
])
def test_bad_option_combinations_say_what_to_pass(finished_run, capsys, extra, message):
    assert main(["answer", "--run-dir", str(finished_run), *extra]) == 1
    assert message in capsys.readouterr().err


def test_a_directory_without_a_run_is_refused_with_the_fix(tmp_path, capsys):
    assert main(["answer", "--run-dir", str(tmp_path), "--user", "x", "--question", "q", "--options", "a", "b"]) == 1
    assert "fermi-dspy personalize" in capsys.readouterr().err
