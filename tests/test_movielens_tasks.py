"""The LaMP-style MovieLens tasks with scripted LMs: rating (a non-accuracy metric) and tagging, no profile.

The examples are SYNTHETIC (made with the loaders' own example builders); the real data is tested in tests/data.
"""

import re

import dspy
import pytest

from fermi_dspy import Fermi, answer_accuracy, rating_errors, rating_score
from fermi_dspy.data import LAMP2_TAGS, make_rating_example, make_tag_example
from fermi_dspy.programs import MovieRating, MovieTagging
from fermi_dspy.testing import instant_lm, rule_lm, shown_options

# A SYNTHETIC harsh critic who loves science fiction.
MOVIES = [("Alien", 1979, ["Sci-Fi", "Horror"], 5.0), ("Notting Hill", 1999, ["Comedy", "Romance"], 1.0),
          ("Blade Runner", 1982, ["Sci-Fi"], 4.5), ("Titanic", 1997, ["Drama", "Romance"], 1.0),
          ("Dune", 1984, ["Sci-Fi"], 5.0), ("Clueless", 1995, ["Comedy"], 2.0),
          ("Solaris", 1972, ["Sci-Fi", "Drama"], 4.0), ("Grease", 1978, ["Musical"], 1.0)]


def ratings():
    return [make_rating_example(title, year, genres, rating) for title, year, genres, rating in MOVIES]


def critic_lm():
    """Rates 3 unless its instruction says the person is harsh (2) and loves sci-fi (5 for Sci-Fi)."""

    def respond(system: str, user: str) -> dict:
        if "[[ ## rating ## ]]" not in user:
            return {"tag": "comedy"}
        genres = re.findall(r"\[\[ ## genres ## \]\]\n(.*?)\n", user)[-1]
        if "loves science fiction" in system and "Sci-Fi" in genres:
            return {"rating": "5"}
        return {"rating": "1" if "harsh" in system else "3"}

    return rule_lm(respond, model="rule/critic")


def critic_proposer():
    drafts = iter(["This person is a harsh critic.", "This person is a harsh critic who loves science fiction.",
                   "This person likes long movies."] * 10)
    return rule_lm(lambda s, u: {"new_prompt": next(drafts)}, model="rule/proposer")


def test_the_rating_student_answers_a_whole_star_and_the_lm_may_say_nothing_else():
    lm = critic_lm()
    with dspy.context(lm=lm):
        prediction = MovieRating()(title="Alien", year=1979, genres=["Sci-Fi"])
    assert prediction.rating == 3.0
    assert "Literal['1', '2', '3', '4', '5']" in lm.engine.calls[-1].user
    with dspy.context(lm=rule_lm(lambda s, u: {"rating": "3.5"}, num_retries=0)), pytest.raises(Exception):  # noqa: B017
        MovieRating()(title="Alien", year=None, genres=[])


def test_rating_score_is_closeness_with_misalignment_at_one_star_and_says_what_the_person_gave():
    example = make_rating_example("Alien", 1979, ["Sci-Fi"], 2.0)
    far = rating_score(example, dspy.Prediction(rating=4.0))
    near = rating_score(example, dspy.Prediction(rating=2.5))
    assert far.score == pytest.approx(1 - 2 / 4.5) and far.aligned is False
    assert far.feedback == "The person rated it 2, the model said 4."
    assert near.aligned is True and near.score > far.score
    assert rating_errors([2.0, 4.0], [4.0, 4.0]) == pytest.approx((1.0, 2 ** 0.5))


def test_a_non_accuracy_metric_drives_the_memory_and_the_misaligned_sets():
    program = Fermi(metric=rating_score, task_model=critic_lm(), prompt_model=critic_proposer(), num_iterations=2,
                    num_candidates=2, num_threads=1, display_progress=False, retrieval_fields=["title"]).compile(
        MovieRating(), trainset=ratings())
    memory = program.detailed_results.memory
    assert memory[0].prompt == "This person is a harsh critic who loves science fiction."
    assert [p.mean_score for p in memory] == sorted((p.mean_score for p in memory), reverse=True)
    best, plain = memory[0], next(p for p in memory if p.prompt == "")
    # mis-aligned = the rating is a star or more off (not "score below 1.0": a 4 for a 4.5 is aligned)
    for prompt in (best, plain):
        assert set(prompt.misaligned(1.0)) == {i for i, a in enumerate(prompt.aligned) if a is False}
    assert len(best.misaligned(1.0)) < len(plain.misaligned(1.0))


def test_with_no_profile_fermi_starts_from_the_task_prompt_alone():
    proposer = critic_proposer()
    program = Fermi(metric=rating_score, task_model=critic_lm(), prompt_model=proposer, num_iterations=1,
                    num_candidates=2, num_threads=1, display_progress=False).compile(MovieRating(),
                                                                                     trainset=ratings())
    first = program.detailed_results.iterations[0].candidates[0]
    assert first.prompt == "" and first.iteration == 0  # the student's own instruction, nothing before it
    assert "(no profile given)" in proposer.engine.calls[0].user


def test_the_tagging_student_answers_one_tag_of_the_vocabulary_by_letter():
    lm = critic_lm()
    example = make_tag_example("Clueless", 1995, ["Comedy"], "comedy")
    with dspy.context(lm=lm):
        prediction = MovieTagging()(**example.inputs())
    assert prediction.tag == "comedy" and prediction.tag in LAMP2_TAGS
    assert shown_options(lm.engine.calls[-1].user) == list(LAMP2_TAGS)
    assert answer_accuracy(example, prediction) == 1.0


def test_the_instant_lm_answers_both_students_within_their_choices_and_by_movie():
    lm = instant_lm()
    titles = ["Alien", "Notting Hill", "Blade Runner", "Titanic", "Dune", "Clueless"]
    before = len(lm.engine.calls)  # the process's instant engine: other tests' calls are there too
    with dspy.context(lm=lm):
        ratings = [MovieRating()(title=t, year=1990, genres=["Drama"]).rating for t in titles]
        tags = [MovieTagging()(**make_tag_example(t, 1990, ["Drama"], "comedy").inputs()).tag for t in titles]
    assert len(lm.engine.calls) - before == 2 * len(titles)  # no parse failure, so no JSON-adapter retry
    assert set(ratings) <= {1.0, 2.0, 3.0, 4.0, 5.0} and len(set(ratings)) > 1
    assert set(tags) <= set(LAMP2_TAGS) and len(set(tags)) > 1


def test_the_proposer_sees_each_misaligned_rating_with_its_feedback_and_genres_as_genres():
    proposer = critic_proposer()
    Fermi(metric=rating_score, task_model=critic_lm(), prompt_model=proposer, num_iterations=2, num_candidates=2,
          num_threads=1, display_progress=False).compile(MovieRating(), trainset=ratings())
    memory = proposer.engine.calls[-1].user.split("[[ ## scored_prompts ## ]]", 1)[1]
    assert "Feedback on the best prompt's answer: The person rated it 1, the model said 3." in memory
    assert memory.count("title: Notting Hill") == 1  # each mis-aligned movie is written out once
    assert "genres: Sci-Fi | Horror" in memory and "A. Sci-Fi" not in memory  # genres are not answer options
