"""Fixtures for the data tests: the real data directory (skip if absent) and synthetic JSONL writers."""

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from fermi_dspy.data import DataError, default_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data directory; tests using it are skipped (with the reason) when it is absent."""
    try:
        return default_data_dir()
    except DataError as exc:
        pytest.skip(f"real data not available: {exc}")


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[[str, list[Any]], Path]:
    """Write a SYNTHETIC JSONL file into tmp_path: dict rows are JSON-encoded, str rows are written verbatim."""

    def write(name: str, rows: list[Any]) -> Path:
        path = tmp_path / name
        lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write


def synthetic_answer(qid: str, answer: Any = "Yes", options: Any = None, **extra: Any) -> dict[str, Any]:
    """A SYNTHETIC OpinionQA-style answer (not real data)."""
    options = ["Yes", "No", "Refused"] if options is None else options
    row = {"qid": qid, "question": f"Synthetic question {qid}?", "options": options, "answer": answer}
    row.update(extra)
    return row


def synthetic_panelist(user_id: Any, answers: list[Any], profile: Any = None, **extra: Any) -> dict[str, Any]:
    """A SYNTHETIC panelist record in the schema of opinionqa/alphaedit_users/users.jsonl (not real data)."""
    row = {"user_id": user_id, "profile": {"AGE": "30-49", "POLPARTY": "Independent"} if profile is None else profile}
    row["answers"] = answers
    row.update(extra)
    return row


def synthetic_hwang(hwang_id: Any, topic: str, answers: list[Any], **extra: Any) -> dict[str, Any]:
    """A SYNTHETIC record in the schema of opinionqa/hwang2023_subset/records.jsonl (not real data)."""
    row = {
        "hwang_user_id": hwang_id,
        "topic": topic,
        "wave": "W0",
        "profile_partial": {"Political party": "Other"},
        "answers": answers,
    }
    row.update(extra)
    return row


def synthetic_country_row(country: Any, question: str, options: Any, distribution: Any, argmax: Any) -> dict:
    """A SYNTHETIC row in the schema of globalopinionqa/country_question_distributions.jsonl (not real data)."""
    return {
        "country": country,
        "question": question,
        "options": options,
        "distribution": distribution,
        "argmax_option": argmax,
        "sources": ["synthetic"],
    }


@pytest.fixture
def synth() -> Any:
    """The synthetic record builders, as a namespace."""

    class Synth:
        answer = staticmethod(synthetic_answer)
        panelist = staticmethod(synthetic_panelist)
        hwang = staticmethod(synthetic_hwang)
        country_row = staticmethod(synthetic_country_row)

    return Synth
