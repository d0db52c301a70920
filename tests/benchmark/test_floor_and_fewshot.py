"""The LM-free floor and the retrieved few-shot baseline."""

from collections import Counter

import dspy

from fermi_dspy.programs import OpinionQA
from fermi_dspy.testing import instant_lm
from programs.fewshot import RetrievedFewShot, fewshot_prompt
from programs.floor import MajorityPositionProgram, favourite_position, position_counts


def example(question, options, answer):
    return dspy.Example(question=question, options=options, answer=answer).with_inputs("question", "options")


def test_floor_answers_the_most_chosen_position_without_any_lm():
    train = [example("a", ["x", "y", "z"], "y"), example("b", ["p", "q"], "q"), example("c", ["x", "y"], "x")]
    program = MajorityPositionProgram(train)
    assert program.counts == Counter({1: 2, 0: 1})
    assert program(question="new", options=["one", "two", "three"]).answer == "two"


def test_floor_ties_go_to_the_lower_position_and_missing_positions_fall_back():
    assert favourite_position(Counter({2: 3, 1: 3}), num_options=4) == 1
    assert favourite_position(Counter({3: 5, 1: 2}), num_options=3) == 1  # position 3 does not exist here
    assert favourite_position(Counter({3: 5}), num_options=2) == 0
    assert favourite_position(Counter(), num_options=2) == 0


def test_position_counts_accepts_letters_and_text():
    train = [example("a", ["x", "y"], "B"), example("b", ["x", "y"], "y")]
    assert position_counts(train) == Counter({1: 2})


def test_fewshot_retrieves_the_most_similar_past_answers_into_the_instruction():
    train = [example("Do you own a gun?", ["Yes", "No"], "Yes"),
             example("Is the economy doing well?", ["Yes", "No"], "No"),
             example("Should gun laws be stricter?", ["Yes", "No"], "No")]
    program = RetrievedFewShot(OpinionQA(), {"Party": "Independent"}, train, k=2)
    retrieved = program.retrieve(question="How many guns do you own?", options=["0", "1+"])
    assert next(e.question for e in retrieved) in {"Do you own a gun?", "Should gun laws be stricter?"}
    assert "Is the economy doing well?" not in [e.question for e in retrieved]

    lm = instant_lm()
    with dspy.context(lm=lm):
        program(question="How many guns do you own?", options=["0", "1+"])
    system = lm.engine.calls[-1].system
    assert "- Party: Independent" in system and "The person's answer:" in system
    assert system.count("Question: ") == 2


def test_fewshot_prompt_without_profile_or_examples():
    assert fewshot_prompt(None, []) == "Answer every question exactly as this person would."
