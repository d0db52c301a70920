"""Every kind of bad record is reported with its file and 1-based line (SYNTHETIC files in tmp_path)."""

import pytest

from fermi_dspy.data import BadRecord, DataError, load_users


def _load_skip(dataset, path, **kwargs):
    return load_users(dataset, path, on_bad_record="skip", **kwargs)


def _by_line(problems):
    return {(p.line, p.kind): p for p in problems}


def test_bad_record_str_names_file_line_user():
    problem = BadRecord("/x/users.jsonl", 12, "101224", "answer 'Maybe' is not among its options ['Yes', 'No']")
    assert str(problem) == "users.jsonl:12 (user 101224): answer 'Maybe' is not among its options ['Yes', 'No']"
    assert str(BadRecord("/x/a.jsonl", 3, None, "malformed JSON")) == "a.jsonl:3: malformed JSON"


def test_answer_not_in_options_message(write_jsonl, synth):
    path = write_jsonl(
        "users.jsonl",
        [
            synth.panelist("u1", [synth.answer("Q1"), synth.answer("Q2")]),
            synth.panelist("101224", [synth.answer("Q1", "Maybe", ["Yes", "No"]), synth.answer("Q2", "No")]),
        ],
    )
    with pytest.raises(DataError) as info:
        load_users("panelists", path)
    message = str(info.value)
    assert str(path) in message
    assert "users.jsonl:2 (user 101224, example Q1): answer 'Maybe' is not among its options ['Yes', 'No']" in message
    assert "on_bad_record='skip'" in message
    assert [p.kind for p in info.value.problems] == ["answer_not_in_options"]

    loaded = _load_skip("panelists", path)
    # Only the bad answer is left out, not the user.
    assert loaded.user_ids == ["u1", "101224"]
    assert loaded.get("101224").example_ids == ("Q2",)
    assert len(loaded.problems) == 1 and loaded.problems[0].line == 2


def test_every_kind_is_listed_with_line(write_jsonl, synth):
    rows = [
        synth.panelist("ok", [synth.answer("Q1"), synth.answer("Q2", "No")]),  # 1
        '{"user_id": "broken", "answers": [',  # 2 malformed
        "[1, 2, 3]",  # 3 not an object
        {"user_id": "noanswers", "profile": {}},  # 4 missing field 'answers'
        {"profile": {}, "answers": [synth.answer("Q1")]},  # 5 missing user_id
        synth.panelist("ok", [synth.answer("Q9")]),  # 6 duplicate user id
        synth.panelist("empty", []),  # 7 no answers
        synth.panelist("allbad", [synth.answer("Q1", None), synth.answer("Q2", "Nope")]),  # 8 null + not-in + empty
        synth.panelist(
            "mixed",
            [
                synth.answer("Q1"),
                synth.answer("Q1", "No"),  # repeated qid
                synth.answer("Q3", "No", answer_index=0),  # index points to 'Yes'
                synth.answer("Q4", "A", ["A", "A", "B"]),  # repeated option
                {"question": "no qid", "options": ["A", "B"], "answer": "A"},  # missing qid
                "not an object",
            ],
        ),  # 9
        synth.panelist("badprofile", [synth.answer("Q1")], profile={"AGE": 30}),  # 10
    ]
    path = write_jsonl("users.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_users("panelists", path)
    raised = info.value.problems

    loaded = _load_skip("panelists", path)
    assert loaded.problems == raised  # "raise" reports all problems, the same ones "skip" lists
    got = _by_line(loaded.problems)
    expected = {
        (2, "malformed_json"),
        (3, "malformed_json"),
        (4, "missing_field"),
        (5, "missing_field"),
        (6, "duplicate_user"),
        (7, "no_valid_answers"),
        (8, "null_answer"),
        (8, "answer_not_in_options"),
        (8, "no_valid_answers"),
        (9, "duplicate_example"),
        (9, "inconsistent_answer"),
        (9, "bad_options"),
        (9, "missing_field"),
        (9, "invalid_field"),
        (10, "invalid_field"),
    }
    assert set(got) == expected
    assert "first seen at line 1" in got[(6, "duplicate_user")].reason
    assert "answer_index 0 points to 'Yes' but answer is 'No'" in got[(9, "inconsistent_answer")].reason
    assert "missing required field 'answers'" in got[(4, "missing_field")].reason
    assert got[(8, "null_answer")].example_id == "Q1"
    for problem in loaded.problems:
        assert str(problem).startswith(f"users.jsonl:{problem.line}")
        assert problem.file == str(path)
    assert loaded.user_ids == ["ok", "mixed"]
    assert loaded.get("mixed").example_ids == ("Q1",)
    assert loaded.get("ok").example_ids == ("Q1", "Q2")  # the duplicate record did not mix in its answers


def test_hwang_null_answer_and_duplicate_user(write_jsonl, synth):
    rows = [
        synth.hwang(7, "Guns", [synth.answer("Q1"), synth.answer("Q2", None, answer_letter="UNKNOWN")]),
        synth.hwang(7, "Race", [synth.answer("Q1", "No")]),  # same Hwang id, other topic: a different user
        synth.hwang(7, "Guns", [synth.answer("Q3")]),  # same topic and id: duplicate
    ]
    path = write_jsonl("records.jsonl", rows)
    with pytest.raises(DataError, match=r"records.jsonl:1 \(user guns-7, example Q2\): 'answer' is null"):
        load_users("hwang", path)
    loaded = _load_skip("hwang", path)
    assert loaded.user_ids == ["guns-7", "race-7"]
    assert "'UNKNOWN'" in loaded.problems[0].reason
    assert [(p.line, p.kind) for p in loaded.problems] == [(1, "null_answer"), (3, "duplicate_user")]
    assert loaded.get("guns-7").meta == {"topic": "Guns", "hwang_user_id": 7, "wave": "W0"}
    assert loaded.get("guns-7").profile == {"Political party": "Other"}



def test_null_answers_can_be_left_out_on_purpose_while_other_problems_stay(write_jsonl, synth):
    rows = [
        synth.hwang(7, "Guns", [synth.answer("Q1"), synth.answer("Q2", None, answer_letter="UNKNOWN")]),  # 1
        synth.hwang(8, "Guns", [synth.answer("Q1", None)]),  # 2: its only answer is null
        synth.hwang(9, "Guns", [synth.answer("Q1", "Nope")]),  # 3: not among the options
    ]
    path = write_jsonl("records.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_users("hwang", path, null_answers="skip")
    assert [(p.line, p.kind) for p in info.value.problems] == [(3, "answer_not_in_options"), (3, "no_valid_answers")]
    loaded = _load_skip("hwang", path, null_answers="skip")
    assert loaded.user_ids == ["guns-7"]
    assert [(p.line, p.kind) for p in loaded.problems] == [(3, "answer_not_in_options"), (3, "no_valid_answers")]
    assert [(p.line, p.kind, p.user_id) for p in loaded.excluded] == [
        (1, "null_answer", "guns-7"), (2, "null_answer", "guns-8"), (2, "no_valid_answers", "guns-8")]
    with pytest.raises(ValueError, match="null_answers"):
        load_users("hwang", path, null_answers="drop")

def test_global_problems(write_jsonl, synth):
    row = synth.country_row
    rows = [
        row("Testland", "Q one?", ["A", "B"], [0.7, 0.3], "A"),  # 1 ok
        row("Testland", "Q two?", ["A", "B"], [0.2, 0.8], "C"),  # 2 argmax not among options
        row("Testland", "Q three?", ["A", "B"], [0.2, 0.8], "A"),  # 3 argmax inconsistent with distribution
        row("Testland", "Q one?", ["A", "B"], [0.6, 0.4], "A"),  # 4 repeated (country, question)
        row(None, "Q one?", ["A", "B"], [0.6, 0.4], "A"),  # 5 missing country
        row("Otherland", "Q one?", ["A", "B"], [0.5], "A"),  # 6 wrong distribution length
        row("TESTLAND", "Q one?", ["A", "B"], [0.6, 0.4], "A"),  # 7 same slug as Testland
        "{not json",  # 8
        row("Otherland", "Q two?", ["A", "B"], [0.5, 0.5], "B"),  # 9 tie: either option is a valid argmax
    ]
    path = write_jsonl("country_question_distributions.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_users("global", path)
    assert "country_question_distributions.jsonl:2 (user testland" in str(info.value)
    loaded = _load_skip("global", path)
    assert [(p.line, p.kind) for p in loaded.problems] == [
        (2, "answer_not_in_options"),
        (3, "inconsistent_answer"),
        (4, "duplicate_example"),
        (5, "missing_field"),
        (6, "invalid_field"),
        (7, "duplicate_user"),
        (8, "malformed_json"),
    ]
    assert "first at line 1" in loaded.problems[2].reason
    assert loaded.user_ids == ["testland", "otherland"]
    testland = loaded.get("testland")
    assert testland.profile == {"Country": "Testland"}
    assert [e.answer for e in testland.examples] == ["A"]
    assert testland.distributions == {testland.example_ids[0]: (0.7, 0.3)}
    assert loaded.get("otherland").examples[0].answer == "B"


def test_drop_refused_and_min_examples_are_listed_not_silent(write_jsonl, synth):
    rows = [
        synth.panelist("a", [synth.answer("Q1", "Refused"), synth.answer("Q2"), synth.answer("Q3", "No")]),
        synth.panelist("b", [synth.answer("Q1", "Refused")]),
        synth.panelist("c", [synth.answer("Q1")]),
    ]
    path = write_jsonl("users.jsonl", rows)
    kept = load_users("panelists", path)
    assert [len(r) for r in kept] == [3, 1, 1]  # refusals are real answers and kept by default
    assert kept.excluded == []

    loaded = load_users("panelists", path, drop_refused=True, min_examples=2)
    assert loaded.problems == []
    assert loaded.user_ids == ["a"]
    assert loaded.get("a").example_ids == ("Q2", "Q3")
    assert {(p.line, p.user_id, p.kind) for p in loaded.excluded} == {
        (1, "a", "refused_dropped"),
        (2, "b", "refused_dropped"),
        (3, "c", "too_few_examples"),
    }
    assert "left out 1 'Refused' answer(s)" in next(p.reason for p in loaded.excluded if p.user_id == "a")


def test_limit_and_arguments(write_jsonl, synth):
    path = write_jsonl("users.jsonl", [synth.panelist(f"u{i}", [synth.answer("Q1")]) for i in range(5)])
    assert load_users("panelists", path, limit=2).user_ids == ["u0", "u1"]
    assert load_users("opinionqa_panelists", path, limit=0).records == []
    with pytest.raises(ValueError, match="unknown dataset"):
        load_users("lamp", path)
    with pytest.raises(ValueError, match="on_bad_record"):
        load_users("panelists", path, on_bad_record="ignore")
    with pytest.raises(ValueError, match="min_examples"):
        load_users("panelists", path, min_examples=0)


def test_blank_lines_are_not_records_and_line_numbers_stay_exact(write_jsonl, synth):
    path = write_jsonl("users.jsonl", ["", synth.panelist("u1", [synth.answer("Q1", "Maybe")]), "   "])
    loaded = load_users("panelists", path, on_bad_record="skip")
    assert [(p.line, p.kind) for p in loaded.problems] == [(2, "answer_not_in_options"), (2, "no_valid_answers")]


def test_gzip_file(tmp_path, synth):
    import gzip
    import json

    path = tmp_path / "users.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(synth.panelist("u1", [synth.answer("Q1")])) + "\n")
    assert load_users("panelists", path).user_ids == ["u1"]
