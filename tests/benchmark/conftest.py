"""Fixtures for the benchmark tests: a SYNTHETIC Hwang-format data file (not real data) and scripted LMs."""

import json
from pathlib import Path

import pytest

from programs.benchmark.scripted import scripted_proposer_lm, scripted_task_lm
from programs.benchmark.settings import METHOD_ORDER, BenchmarkSettings

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
    """Every method on two synthetic users, small budgets."""
    return BenchmarkSettings(dataset="hwang", data_path=str(hwang_file), users=2, n_train=6, n_test=4,
                             num_iterations=2, num_candidates=2, memory_size=3, methods=METHOD_ORDER)


@pytest.fixture
def lms():
    """(task LM, proposer LM): instant scripted LMs that record their own requests in `lm.engine.calls`."""
    return scripted_task_lm(), scripted_proposer_lm()
