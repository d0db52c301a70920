"""The LM-free floors and the retrieved few-shot baseline (opinion questions; SYNTHETIC movies)."""

from collections import Counter

import dspy

from fermi_dspy.data import LAMP2_TAGS, make_rating_example, make_tag_example
from fermi_dspy.programs import MovieRating, OpinionQA
from fermi_dspy.testing import instant_lm
from programs.fewshot import RetrievedFewShot, fewshot_prompt, render_past_answers
from programs.floor import (
    MajorityPositionProgram,
    MeanRatingProgram,
    MostFrequentTagProgram,
    favourite_position,
    position_counts,
    whole_star,
)
from programs.tasks import TASKS


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


def test_rating_floor_is_the_mean_rounded_to_a_whole_star_halves_up_within_1_to_5():
    assert [whole_star(x) for x in (0.5, 0.74, 1.5, 2.49, 2.5, 3.5, 4.75, 5.0)] == [1, 1, 2, 2, 3, 4, 5, 5]
    floor = MeanRatingProgram([make_rating_example("a", 1990, [], r) for r in (3.0, 4.0, 3.5, 4.5)])
    assert floor.mean == 3.75 and floor(title="new", year=None, genres=[]).rating == 4.0


def test_tag_floor_gives_the_most_frequent_tag_and_ties_go_to_the_first_option():
    train = [make_tag_example("a", 1990, [], tag) for tag in ("comedy", "romance", "romance", "comedy", "action")]
    floor = MostFrequentTagProgram(train)
    assert floor(title="new", year=None, genres=[], options=list(LAMP2_TAGS)).tag == "comedy"  # listed before romance
    assert floor(title="new", year=None, genres=[], options=["romance", "comedy"]).tag == "romance"


def test_fewshot_on_movies_shows_the_users_own_ratings_of_the_most_similar_movies():
    past = TASKS["movielens-rating"].past
    train = [make_rating_example("Alien", 1979, ["Sci-Fi", "Horror"], 5.0),
             make_rating_example("Notting Hill", 1999, ["Comedy", "Romance"], 1.5),
             make_rating_example("Solaris", 1972, ["Sci-Fi", "Drama"], 4.0)]
    program = RetrievedFewShot(MovieRating(), None, train, k=2, past=past)
    assert {e.title for e in program.retrieve(title="Dune", year=1984, genres=["Sci-Fi"])} == {"Alien", "Solaris"}
    lm = instant_lm()
    with dspy.context(lm=lm):
        program(title="Dune", year=1984, genres=["Sci-Fi"])
    system = lm.engine.calls[-1].system
    assert "Here are this person's ratings of other movies:" in system
    assert "Title: Alien" in system and "Genres: Sci-Fi, Horror" in system and "The person's rating: 5\n" in system
    assert "Notting Hill" not in system and "profile" not in system.lower()
    assert render_past_answers(train[1:2], past) == ("Title: Notting Hill\nYear: 1999\nGenres: Comedy, Romance\n"
                                                     "The person's rating: 1.5")
