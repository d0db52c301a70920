"""Round trip through Hugging Face `datasets`."""

import json

import pytest

from fermi_dspy.data import DataError, UserRecord, load_users, make_example, records_from_hf_dataset, to_hf_dataset


def _synthetic_records() -> list[UserRecord]:
    """SYNTHETIC users (not real data)."""
    a = UserRecord(
        "syn-a",
        {"AGE": "18-29", "Ville": "Zürich"},
        (make_example("Q1?", ["Yes", "No"], "No"), make_example("Q2?", ["x", "y", "z"], "z")),
        ("Q1", "Q2"),
        "synthetic",
        meta={"topic": "T"},
    )
    b = UserRecord("syn-b", None, (make_example("Q1?", ["Yes", "No"], "Yes"),), ("Q1",), "synthetic")
    return [a, b]


def test_round_trip_synthetic():
    records = _synthetic_records()
    ds = to_hf_dataset(records)
    assert len(ds) == 3
    assert set(ds.column_names) == {
        "user_id",
        "source",
        "example_id",
        "question",
        "options",
        "answer",
        "profile",
        "meta",
    }
    assert json.loads(ds[0]["profile"]) == {"AGE": "18-29", "Ville": "Zürich"}
    assert ds[2]["profile"] == "null"
    back = records_from_hf_dataset(ds)
    assert back == records
    for example in back[0].examples:
        assert set(example.inputs().keys()) == {"question", "options"}
        assert set(example.labels().keys()) == {"answer"}


def test_round_trip_real(data_dir):
    hwang = load_users("hwang", on_bad_record="skip", limit=20).records
    countries = load_users("global", limit=3).records
    records = hwang + countries
    ds = to_hf_dataset(records)
    assert len(ds) == sum(len(r) for r in records)
    assert records_from_hf_dataset(ds) == records


def test_non_contiguous_rows_and_custom_columns():
    import datasets

    ds = datasets.Dataset.from_dict(
        {
            "who": ["u1", "u2", "u1"],
            "q": ["Q1?", "Q1?", "Q2?"],
            "opts": [["a", "b"], ["a", "b"], ["c", "d"]],
            "label": ["a", "b", "d"],
        }
    )
    records = records_from_hf_dataset(
        ds, user_column="who", question_column="q", options_column="opts", answer_column="label", source="mine"
    )
    assert [r.user_id for r in records] == ["u1", "u2"]
    assert records[0].example_ids == ("0", "1")
    assert [e.answer for e in records[0].examples] == ["a", "d"]
    assert records[0].profile is None and records[0].source == "mine"


def test_bad_rows_raise_with_row_numbers():
    import datasets

    ds = datasets.Dataset.from_dict(
        {
            "user_id": ["u1", "u1", "u2"],
            "example_id": ["Q1", "Q1", "Q1"],
            "question": ["Q1?", "Q1?", "Q1?"],
            "options": [["a", "b"], ["a", "b"], ["a", "b"]],
            "answer": ["a", "a", "maybe"],
        }
    )
    with pytest.raises(DataError) as info:
        records_from_hf_dataset(ds)
    assert [(p.line, p.kind) for p in info.value.problems] == [(2, "duplicate_example"), (3, "answer_not_in_options")]
    with pytest.raises(DataError, match="no column 'answer'"):
        records_from_hf_dataset(ds.remove_columns("answer"))
