"""Bad records: each kind is reported with its file and line; the run either skips them (listed) or refuses."""

import json

import dspy
import pytest

from fermi_dspy.data import DataError
from fermi_dspy.runs import UserData, estimate_users, personalize_users
from tests.runs import lms
from tests.runs.conftest import run_kwargs


def bad_lines() -> tuple[str, ...]:
    missing = {k: v for k, v in lms.hwang_row(50).items() if k != "answers"}
    not_an_option = lms.hwang_row(51, 12)
    not_an_option["answers"][0]["answer"] = "Maybe"
    empty = {**lms.hwang_row(52), "answers": []}
    return (
        '{"hwang_user_id": 49, "topic": ',  # line 4: malformed JSON
        json.dumps(missing),  # line 5: no answers field
        json.dumps(not_an_option),  # line 6: an answer that is not an option (only that answer is left out)
        json.dumps(lms.hwang_row(1)),  # line 7: the same user as line 1
        json.dumps(empty),  # line 8: a user with no answers
    )


EXPECTED = {  # line -> (kind, words of the reason)
    4: ("malformed_json", "malformed JSON"),
    5: ("missing_field", "missing required field 'answers'"),
    6: ("answer_not_in_options", "'Maybe' is not among its options"),
    7: ("duplicate_user", "synthetic-1"),
    8: ("no_valid_answers", "user has no answers"),
}


def test_bad_records_refuse_the_run_by_default_naming_file_and_line(users_file, tmp_path):
    data = users_file(3, extra_lines=bad_lines())
    with pytest.raises(DataError) as error:
        personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **run_kwargs())
    message = str(error.value)
    for line, (_, words) in EXPECTED.items():
        assert f"{data.name}:{line}" in message and words in message
    assert "on_bad_record='skip'" in message
    assert not (tmp_path / "run" / "manifest.json").exists() and sum(lms.calls_by_user().values()) == 0


def test_skipped_bad_records_are_listed_with_file_line_and_kind(users_file, tmp_path):
    data = users_file(3, extra_lines=bad_lines())
    summary = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run",
                                **run_kwargs(on_bad_record="skip"))
    assert summary.done == 4 and summary.bad_records == 5  # the 3 good users and the one with a bad answer left out
    listed = json.loads((tmp_path / "run" / "input_problems.json").read_text())
    assert listed["policy"] == "skip"
    found = {p["line"]: p for p in listed["bad_records"]}
    assert set(found) == set(EXPECTED)
    for line, (kind, words) in EXPECTED.items():
        assert found[line]["kind"] == kind and words in found[line]["reason"]
        assert found[line]["file"].endswith(data.name)
    assert "5 bad record(s)" in summary.format()


def test_users_too_small_for_the_split_are_listed_as_left_out(users_file, tmp_path):
    data = users_file(2, extra_lines=(json.dumps(lms.hwang_row(60, 5)),))
    summary = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **run_kwargs())
    assert summary.done == 2
    excluded = json.loads((tmp_path / "run" / "input_problems.json").read_text())["excluded"]
    assert [(e["user_id"], e["kind"]) for e in excluded] == [("synthetic-60", "too_few_examples")]


def _example(topic: str, answer: str = "Yes") -> dspy.Example:
    return dspy.Example(question=f"[u9] Do you support {topic}?", options=["Yes", "No"], answer=answer).with_inputs(
        "question", "options")


def in_memory_users() -> list[UserData]:
    train = [_example(t) for t in lms.TOPICS[:6]]
    test = [_example(t) for t in lms.TOPICS[6:8]]
    return [
        UserData("alice", train, test),
        UserData("alice", train, test),  # item 2: duplicate id
        UserData("bob", [], test),  # item 3: nothing to learn from
        UserData("carol", [*train[:5], _example("zoos", "Maybe")], test),  # item 4: answer not among the options
        UserData("dave", train, test, profile={"Political party": "Democrat"}),
    ]


def test_bad_users_given_in_memory_are_refused_or_skipped(tmp_path):
    with pytest.raises(DataError) as error:
        personalize_users(in_memory_users(), run_dir=tmp_path / "refused", **run_kwargs())
    message = str(error.value)
    assert "<users>:2 (user alice): duplicate user id" in message
    assert "<users>:3 (user bob): the user has no examples" in message
    assert "<users>:4 (user carol)" in message and "Maybe" in message
    assert not (tmp_path / "refused" / "manifest.json").exists()
    assert len(json.loads((tmp_path / "refused" / "input_problems.json").read_text())["bad_records"]) == 3

    summary = personalize_users(in_memory_users(), run_dir=tmp_path / "run", **run_kwargs(on_bad_record="skip"))
    assert summary.done == 2 and summary.skipped == 3
    kinds = [p["kind"] for p in json.loads((tmp_path / "run" / "input_problems.json").read_text())["bad_records"]]
    assert kinds == ["duplicate_user", "no_valid_answers", "invalid_user"]


def test_the_dry_run_refuses_bad_records_too(users_file):
    with pytest.raises(DataError):
        estimate_users("hwang", data_path=users_file(2, extra_lines=bad_lines()), **run_kwargs())


def _many_problems(count: int) -> tuple[str, ...]:
    rows = []
    for number in range(100, 100 + count):
        row = lms.hwang_row(number)
        row["answers"][0]["answer"] = "Maybe"  # not among its options: a structural problem
        rows.append(json.dumps(row))
    return tuple(rows)


def test_refuse_mode_writes_every_problem_to_a_file_and_shows_the_first_ones(users_file, tmp_path):
    data, run_dir = users_file(2, extra_lines=_many_problems(41)), tmp_path / "run"
    with pytest.raises(DataError) as error:
        personalize_users("hwang", data_path=data, run_dir=run_dir, **run_kwargs())
    message = str(error.value)
    listed = json.loads((run_dir / "input_problems.json").read_text())
    assert listed["policy"] == "raise" and listed["refused"] is True and len(listed["bad_records"]) == 41
    assert {p["line"] for p in listed["bad_records"]} == set(range(3, 44))
    assert "41 bad record(s)" in message and str(run_dir / "input_problems.json") in message
    assert message.count("not among its options") == 20 and "21 more" in message
    assert not (run_dir / "manifest.json").exists() and not (run_dir / "users").exists()
    assert sum(lms.calls_by_user().values()) == 0


def test_the_dry_run_shows_every_problem_in_both_modes(users_file, tmp_path, capsys):
    from fermi_dspy.runs.cli import EXIT_OK, EXIT_REFUSED, build_parser, main

    data = users_file(2, extra_lines=_many_problems(41))
    base = ["--data", "hwang", "--data-path", str(data), "--run-dir", str(tmp_path / "run"), "--lm", lms.TASK,
            "--proposer-lm", lms.PROPOSER, "--train", "6", "--test", "4", "--dry-run"]
    for extra, status in (([], EXIT_REFUSED), (["--on-bad-record", "skip"], EXIT_OK)):
        assert main(build_parser().parse_args([*base, *extra])) == status
        captured = capsys.readouterr()
        shown = captured.out + captured.err
        assert all(f"{data.name}:{line} " in shown for line in range(3, 44)), extra
        assert "more" not in shown.replace("no more", "")
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def _with_null_answers(users_file, count: int = 3):
    row = lms.hwang_row(70, 12)
    row["answers"][0]["answer"] = None
    row["answers"][0]["answer_letter"] = "UNKNOWN"
    return users_file(count, extra_lines=(json.dumps(row),))


def test_a_null_answer_is_left_out_with_a_warning_by_default(users_file, tmp_path, caplog):
    data = _with_null_answers(users_file)
    caplog.set_level("WARNING")
    summary = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **run_kwargs())
    assert summary.done == 4 and summary.bad_records == 0
    assert "no recorded choice" in caplog.text
    excluded = json.loads((tmp_path / "run" / "input_problems.json").read_text())["excluded"]
    assert [(e["line"], e["kind"], e["user_id"]) for e in excluded] == [(4, "null_answer", "synthetic-70")]


def test_structural_problems_still_refuse_next_to_null_answers(users_file, tmp_path):
    row = lms.hwang_row(71, 12)
    row["answers"][0]["answer"] = None
    data = users_file(2, extra_lines=(json.dumps(row), '{"broken": '))
    with pytest.raises(DataError) as error:
        personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **run_kwargs())
    assert "1 bad record(s)" in str(error.value) and "malformed JSON" in str(error.value)
