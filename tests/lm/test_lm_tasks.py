"""The real local engine (SmolLM2-135M, the smallest embedded model) on real users: answers are always an option,
option probabilities come from the engine's logprobs, and one real MovieLens user goes through each task.

Run with `-m integration`; skipped without llama-cpp-python, the model or `../shared/data`.
"""

import math

import dspy
import pytest

from fermi_dspy import Fermi, answer_probability, rating_score
from fermi_dspy.data import DataNotFoundError, load_users, split_user
from fermi_dspy.metrics import option_index
from fermi_dspy.programs import MovieRating, MovieTagging, OpinionQA

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lm(smallest_model_path):
    from fermi_dspy.lm.config import local_lm

    return local_lm(smallest_model_path, cache=False)


def users(dataset: str, minimum: int) -> list:
    try:
        return load_users(dataset, on_bad_record="skip", null_answers="skip", min_examples=minimum).records
    except DataNotFoundError as exc:
        pytest.skip(f"the real data is not beside the checkout: {exc}")


def test_every_real_answer_is_an_option_and_carries_option_probabilities(lm):
    user = users("panelists", 30)[0]
    questions = list(user.examples[:12])
    with dspy.context(lm=lm.copy(logprobs=True, top_logprobs=20)):
        predictions = [OpinionQA()(**example.inputs()) for example in questions]
    for example, prediction in zip(questions, predictions, strict=True):
        assert option_index(prediction.answer, example.options) is not None
        assert len(prediction.option_probs) == len(example.options)
        assert 0.0 < sum(prediction.option_probs) <= 1.0 + 1e-6
        assert prediction.option_probs.index(max(prediction.option_probs)) == example.options.index(prediction.answer)
    soft = [answer_probability(e, p).score for e, p in zip(questions, predictions, strict=True)]
    assert all(0.0 <= s <= 1.0 for s in soft) and not all(s in (0.0, 1.0) for s in soft)


def test_fermi_with_the_soft_score_on_a_real_panelist(lm):
    user = users("panelists", 30)[0]
    split = split_user(user, n_train=6, n_test=4, seed=0)
    program = Fermi(metric=answer_probability, task_model=lm, prompt_model=lm, num_iterations=1, num_candidates=2,
                    num_threads=1, display_progress=False, retrieval_fields=["question"]).compile(
        OpinionQA(), trainset=list(split.train), profile=user.profile)
    scores = [s for p in program.detailed_results.memory for s in p.scores]
    assert scores and not all(s in (0.0, 1.0) for s in scores)  # probabilities, not 0/1
    with dspy.context(lm=lm):
        for example in split.test:
            assert option_index(program(**example.inputs()).answer, example.options) is not None


@pytest.mark.parametrize(("dataset", "student", "metric", "label"), [
    ("movielens-rating", MovieRating, rating_score, "rating"),
    ("movielens-tag", MovieTagging, None, "tag"),
])
def test_one_real_movielens_user_through_each_task(lm, dataset, student, metric, label):
    user = max(users(dataset, 14), key=lambda u: len(u.examples))
    split = split_user(user, n_train=6, n_test=4, seed=0)
    assert user.profile is None
    program = Fermi(metric=metric, task_model=lm, prompt_model=lm, num_iterations=1, num_candidates=2,
                    num_threads=1, display_progress=False).compile(student(), trainset=list(split.train))
    assert program.detailed_results.iterations[0].candidates[0].prompt == ""  # no profile: the task prompt alone
    with dspy.context(lm=lm):
        answers = [program(**example.inputs())[label] for example in split.test]
    if label == "rating":
        assert all(value in (1.0, 2.0, 3.0, 4.0, 5.0) for value in answers)
        assert all(math.isfinite(rating_score(e, dspy.Prediction(rating=a)).score)
                   for e, a in zip(split.test, answers, strict=True))
    else:
        assert all(answer in split.test[0].options for answer in answers)
