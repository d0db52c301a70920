"""Retrieval-of-Prompt and the embedders (synthetic data)."""

import itertools

import dspy
import numpy as np
import pytest

from fermi_dspy import Fermi, TfidfEmbedder
from fermi_dspy.programs import OpinionQA
from fermi_dspy.selection import choose_prompt, query_text
from fermi_dspy.testing import rule_lm

PLACES = ["park", "city", "house", "farm", "garden", "street"]


def pets_examples():
    """Synthetic: the person likes cats and dislikes dogs."""
    data = []
    for place in PLACES[:5]:
        for animal, answer in (("cats", "Yes"), ("dogs", "No")):
            data.append(
                dspy.Example(question=f"Do you like {animal} in the {place}?", options=["Yes", "No"], answer=answer)
                .with_inputs("question", "options")
            )
    return data


def pets_lms():
    def task(system, user):
        if "always says yes" in system:
            return {"answer": "Yes"}
        if "always says no" in system:
            return {"answer": "No"}
        return {"answer": "Unsure"}

    counter = itertools.count()

    def proposer(system, user):
        return {"new_prompt": ["This person always says yes.", "This person always says no."][next(counter) % 2]}

    return rule_lm(task, model="rule/task"), rule_lm(proposer, model="rule/proposer")


def compile_pets(**kwargs):
    task, proposer = pets_lms()
    optimizer = Fermi(task_model=task, prompt_model=proposer, num_iterations=1, num_candidates=3,
                      display_progress=False, retrieval_fields=["question"], **kwargs)
    return optimizer.compile(OpinionQA(), trainset=pets_examples(), profile={"Pets": "some"}), task


def test_retrieval_picks_the_prompt_that_did_best_on_the_nearest_questions():
    program, task = compile_pets()
    yes = program.prompts.index("This person always says yes.")
    no = program.prompts.index("This person always says no.")
    assert program.route(question="Do you like cats in the street?", options=["Yes", "No"]) == yes
    assert program.route(question="Do you like dogs in the street?", options=["Yes", "No"]) == no
    with dspy.context(lm=task):
        assert program(question="Do you like cats in the street?", options=["Yes", "No"]).answer == "Yes"
        assert program(question="Do you like dogs in the street?", options=["Yes", "No"]).answer == "No"


def test_best_selection_uses_one_prompt_for_every_query():
    program, _ = compile_pets(selection="best")
    queries = [f"Do you like {animal} in the street?" for animal in ("cats", "dogs")]
    routes = {program.route(question=q, options=["Yes", "No"]) for q in queries}
    assert routes == {0} == {program.best_index}


def test_best_index_names_the_prompt_retrieval_falls_back_to():
    program, _ = compile_pets()
    means = [p.mean_score for p in program.detailed_results.memory]
    assert program.best_index == means.index(max(means))
    assert program.route(question="Something else entirely?", options=["Yes", "No"]) == program.best_index


def test_custom_embedder_callable_and_dspy_embedder():
    def bag_of_pets(texts):
        return np.array([[t.count("cats"), t.count("dogs"), 0.1] for t in texts], dtype=float)

    for embedder in (bag_of_pets, dspy.Embedder(bag_of_pets, caching=False)):
        program, _ = compile_pets(embedder=embedder)
        assert program.router.embedder_state is None
        yes = program.prompts.index("This person always says yes.")
        assert program.route(question="cats cats", options=["Yes", "No"]) == yes


def test_choose_prompt_ties_go_to_overall_score_then_index():
    scores = np.array([[1, 0, 0, 1], [1, 0, 1, 0], [0, 1, 1, 1]], dtype=float)
    means = scores.mean(axis=1)
    similarities = np.array([0.9, 0.8, 0.1, 0.0])
    # nearest two = examples 0 and 1: each prompt scores 1 there; prompt 2 has the best overall score
    assert choose_prompt(scores, means, similarities, 2) == 2
    assert choose_prompt(scores, means, similarities, 1) == 0
    # no similarity signal (e.g. a query sharing no word): the best prompt overall
    assert choose_prompt(scores, means, np.zeros(4), 3) == 2
    assert choose_prompt(scores, means, None, 3) == 2


def test_tfidf_embedder_round_trips_its_state():
    texts = ["Do you like cats?", "Do you like dogs at home?", "Taxes are too high"]
    embedder = TfidfEmbedder().fit(texts)
    restored = TfidfEmbedder.load_state(embedder.dump_state())
    assert np.allclose(embedder(["cats at home"]), restored(["cats at home"]))
    with pytest.raises(RuntimeError, match="must be fitted"):
        TfidfEmbedder()(["x"])


def test_query_text_uses_chosen_fields():
    assert query_text({"question": "Q?", "options": ["a", "b"]}, ["question"]) == "question: Q?"
    assert query_text({"question": "Q?", "options": ["a", "b"]}, None) == "question: Q?\noptions: a | b"
