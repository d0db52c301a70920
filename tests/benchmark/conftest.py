"""Fixtures for the benchmark tests: a SYNTHETIC Hwang-format data file (not real data) and the instant scripted LMs
(`fermi_dspy.testing.instant_lm`), which the runs' workers build from their spec."""

import json
from pathlib import Path

import pytest

from fermi_dspy.runs.lms import clear_worker_lms
from fermi_dspy.testing import instant_engine
from programs.benchmark.settings import METHOD_ORDER, SCRIPTED, BenchmarkSettings

#: Profile values that must never appear in any file the benchmark writes.
SECRET_PARTY = "Zebra Party"
SECRET_IDEOLOGY = "Tangerine"
OPTIONS = ["Strongly agree", "Agree", "Disagree", "Refused"]


def synthetic_record(user: int, topic: str, n_answers: int) -> dict:
    """One SYNTHETIC Hwang-style record: a user x topic with `n_answers` made-up answers."""
    answers = []
    for i in range(n_answers):
        index = (user + i * i) % 3
        answers.append({"qid": f"Q{i:02d}_W1", "question": f"Do you agree with statement {i} about {topic}?",
                        "options": OPTIONS, "answer_letter": "ABCD"[index], "answer": OPTIONS[index],
                        "answer_index": index})
    return {"hwang_user_id": user, "wave": "W1", "topic": topic,
            "profile_partial": {"Political ideology": SECRET_IDEOLOGY, "Political party": SECRET_PARTY},
            "answers": answers}


@pytest.fixture
def hwang_file(tmp_path: Path) -> Path:
    """Four users with 16 answers and one with only 5 (too few for a 6/4 split)."""
    records = [synthetic_record(u, topic, 16) for u, topic in enumerate(["Guns", "Science", "Economy", "Media"], 1)]
    records.insert(2, synthetic_record(9, "Short", 5))
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


@pytest.fixture
def small_settings(hwang_file: Path) -> BenchmarkSettings:
    """Every method on two synthetic users, small budgets, instant scripted LMs."""
    return BenchmarkSettings(dataset="hwang", data_path=str(hwang_file), users=2, n_train=6, n_test=4,
                             num_iterations=2, num_candidates=2, memory_size=3, methods=METHOD_ORDER,
                             task_lm=SCRIPTED, proposer_lm=SCRIPTED)


@pytest.fixture
def engines():
    """(task, proposer) engines of the instant scripted LMs, emptied: their `calls` record every request."""
    clear_worker_lms()
    found = instant_engine("task"), instant_engine("proposer")
    for engine in found:
        engine.calls.clear()
    return found


def calls(engines) -> int:
    return sum(len(engine.calls) for engine in engines)
