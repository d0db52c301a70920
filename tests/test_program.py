"""The returned program as an ordinary DSPy module: save/load, Evaluate, batch, threads, inside bigger programs."""

import json
import threading

import dspy
import numpy as np
import pytest

from fermi_dspy import PersonalizedProgram, answer_accuracy
from fermi_dspy.programs import OpinionQA
from tests.scripted import topic_examples
from tests.test_optimizer import fermi
from tests.test_selection import compile_pets


@pytest.fixture
def compiled():
    return compile_pets()


QUERIES = [{"question": f"Do you like {a} in the {p}?", "options": ["Yes", "No"]}
           for a in ("cats", "dogs") for p in ("street", "park", "moon")]


def test_save_load_round_trip_gives_identical_predictions(compiled, tmp_path):
    program, task = compiled
    path = tmp_path / "user.json"
    program.save(str(path))
    loaded = PersonalizedProgram(OpinionQA())
    loaded.load(str(path))
    assert loaded.prompts == program.prompts and loaded.router.dump_state() == program.router.dump_state()
    with dspy.context(lm=task):
        for query in QUERIES:
            assert loaded.route(**query) == program.route(**query)
            assert loaded(**query).answer == program(**query).answer


def test_saved_file_holds_no_lm_and_is_json(compiled, tmp_path):
    program, _ = compiled
    path = tmp_path / "user.json"
    program.save(str(path))
    state = json.loads(path.read_text())
    assert set(state) == {"program.predict", "router", "metadata"}
    assert state["program.predict"]["lm"] is None
    # The predictor keeps its own task instruction; the prompts live in the router and are composed per call.
    assert state["program.predict"]["signature"]["instructions"] == OpinionQA().predict.signature.instructions
    assert state["router"]["base_instructions"] == {"predict": OpinionQA().predict.signature.instructions}


def test_a_program_saved_in_the_earlier_format_loads_and_answers_the_same(compiled, tmp_path):
    # Before prompts were composed per call, the saved predictor carried the best prompt in its instruction.
    from fermi_dspy.personalize import compose_instruction

    program, _ = compiled
    path = tmp_path / "user.json"
    program.save(str(path))
    state = json.loads(path.read_text())
    base = state["router"]["base_instructions"]["predict"]
    state["program.predict"]["signature"]["instructions"] = compose_instruction(state["router"]["prompts"][0], base)
    path.write_text(json.dumps(state))
    loaded = PersonalizedProgram(OpinionQA())
    loaded.load(str(path))
    assert loaded.program.predict.signature.instructions == base
    assert loaded.prompts == program.prompts


def test_custom_embedder_must_be_given_again_after_load(tmp_path):
    def embedder(texts):
        return np.array([[t.count("cats"), t.count("dogs"), 0.1] for t in texts], dtype=float)

    program, _ = compile_pets(embedder=embedder)
    program.save(str(tmp_path / "u.json"))
    bare = PersonalizedProgram(OpinionQA())
    bare.load(str(tmp_path / "u.json"))
    with pytest.raises(RuntimeError, match="custom embedder, which is not saved"):
        bare.route(**QUERIES[0])
    again = PersonalizedProgram(OpinionQA(), embedder=embedder)
    again.load(str(tmp_path / "u.json"))
    assert again.route(**QUERIES[0]) == program.route(**QUERIES[0])


def test_works_with_dspy_evaluate_and_batch(compiled):
    program, task = compiled
    devset = [dspy.Example(**q, answer="Yes" if "cats" in q["question"] else "No").with_inputs("question", "options")
              for q in QUERIES]
    with dspy.context(lm=task):
        result = dspy.Evaluate(devset=devset, metric=answer_accuracy, num_threads=4)(program)
        batch = program.batch(list(devset), num_threads=3)
    assert result.score == 100.0
    assert [p.answer for p in batch] == [d.answer for d in devset]


def test_forward_is_safe_from_many_threads(compiled):
    program, task = compiled
    expected = {q["question"]: ("Yes" if "cats" in q["question"] else "No") for q in QUERIES}
    errors = []

    def worker():
        try:
            with dspy.context(lm=task):
                for _ in range(20):
                    for query in QUERIES:
                        assert program(**query).answer == expected[query["question"]]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


class Pipeline(dspy.Module):
    def __init__(self, personal):
        super().__init__()
        self.personal = personal
        self.summarize = dspy.Predict("answer -> summary")

    def forward(self, question, options):
        return self.personal(question=question, options=options)


def test_inside_a_bigger_program_saves_and_loads_with_it(compiled, tmp_path):
    program, task = compiled
    pipeline = Pipeline(program)
    pipeline.save(str(tmp_path / "pipeline.json"))
    fresh = Pipeline(PersonalizedProgram(OpinionQA()))
    fresh.load(str(tmp_path / "pipeline.json"))
    assert fresh.personal.prompts == program.prompts
    with dspy.context(lm=task):
        for query in QUERIES:
            assert fresh(**query).answer == program(**query).answer


def test_deepcopy_and_reset_copy_are_independent(compiled):
    program, _ = compiled
    copy = program.deepcopy()
    assert copy.prompts == program.prompts and copy.router is not program.router
    assert copy.route(**QUERIES[0]) == program.route(**QUERIES[0])
    reset = program.reset_copy()  # like instructions elsewhere in DSPy, the learned prompts and routing survive
    assert reset.prompts == program.prompts and reset.route(**QUERIES[0]) == program.route(**QUERIES[0])


def test_detailed_results_are_inspectable(examples):
    program = fermi().compile(OpinionQA(), trainset=examples, profile={"A": "b"})
    data = program.detailed_results.to_dict()
    json.dumps(data)
    assert data["memory"][0]["prompt"] == program.prompts[0]
    assert len(data["memory"][0]["scores"]) == data["num_optimization_examples"]


def test_valset_scores_join_the_retrieval_pool(examples):
    valset = topic_examples(["guns", "zoos"], supported={"guns"})
    program = fermi(num_iterations=1).compile(OpinionQA(), trainset=examples, profile={"A": "b"}, valset=valset)
    optimization = program.detailed_results.num_optimization_examples
    assert all(len(row) == optimization + 2 for row in program.router.scores)
    assert len(program.router.embeddings) == optimization + 2
