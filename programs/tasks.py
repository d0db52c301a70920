"""The per-user tasks the main job and the benchmark run, and everything that differs between them.

* "opinion" (data sets panelists, hwang, global): `OpinionQA` answers a survey question for a person with a
  profile; scored by accuracy; the floor answers the user's most chosen option position.
* "movielens-rating" (LaMP-3-like): `MovieRating` predicts a person's star rating of a movie (title, year, genres;
  no profile) among whole stars 1-5. Fermi optimizes `rating_score` (1 - |error| / 4.5; mis-aligned a star or more
  off); the reports show MAE and RMSE in stars (lower is better) and that score. The floor rates every movie with
  the user's mean training rating rounded to a whole star (its MAE from the unrounded mean is reported too).
* "movielens-tag" (LaMP-2-like): `MovieTagging` chooses a person's tag of a movie among LaMP-2's 15 tags (no
  profile); scored by accuracy; the floor gives the user's most frequent training tag.

Split defaults (per user, train / test; a user needs both, `prepare_users`' `min_examples`):

* rating 10 / 10: every one of the 706 MovieLens raters has at least 20 ratings, so all qualify (the loader keeps a
  seeded sample of at most 100 per user);
* tagging 8 / 8: in ml-latest-small only 4 users have 16 or more movies tagged with LaMP-2's vocabulary (users 40,
  262, 305 and 614, with 91, 30, 28 and 16); 6 / 6 would admit 6 users, with fewer answers each.
* opinion: the main job's and the benchmark's own defaults.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any

import dspy

from fermi_dspy.data import MOVIELENS_RATING, MOVIELENS_TAG, canonical_dataset
from fermi_dspy.metrics import Metric, answer_accuracy, answer_feedback, rating_errors, rating_score
from fermi_dspy.programs import MovieRating, MovieTagging, OpinionQA
from programs.fewshot import OPINION_PAST, PastAnswers
from programs.floor import MajorityPositionProgram, MeanRatingProgram, MostFrequentTagProgram

OPINION = "opinion"
RATING = "movielens-rating"
TAGGING = "movielens-tag"

MOVIE_FIELDS = ("title", "year", "genres")
MOVIE_RETRIEVAL = ("title", "genres")
"""What a movie is retrieved on (by Retrieval-of-Prompt and few-shot): its title and genres, not its year."""


@dataclass(frozen=True)
class TaskSpec:
    """One per-user task.

    Attributes:
        name: "opinion", "movielens-rating" or "movielens-tag".
        student: Builds the student program.
        label: The label field of the examples ("answer", "rating", "tag").
        past: How few-shot retrieves and shows the user's past examples (its retrieval fields are Fermi's too).
        test_metric: Scores a held-out answer; every method is compared on it.
        fermi_metric: What Fermi (and OPRO) optimize; None is Fermi's default, per-user accuracy.
        feedback_metric: A metric with textual feedback, for GEPA.
        floor: Builds the LM-free floor from the user's training examples.
        floor_label: What the floor does, in a few words.
        has_profile: Users have a profile (methods that only add the profile are pointless without one).
        metrics: What the reports show per method, first the headline: ("accuracy",) or ("mae", "rmse", "score").
        split: Default (train, test) examples per user; None keeps the job's own defaults.
    """

    name: str
    student: Callable[[], dspy.Module]
    label: str
    past: PastAnswers
    test_metric: Metric
    fermi_metric: Metric | None
    feedback_metric: Metric
    floor: Callable[[Sequence[dspy.Example]], dspy.Module]
    floor_label: str
    has_profile: bool
    metrics: tuple[str, ...]
    split: tuple[int, int] | None = None

    @property
    def retrieval_fields(self) -> list[str]:
        return list(self.past.retrieval_fields)

    @property
    def is_rating(self) -> bool:
        return "mae" in self.metrics


TASKS: dict[str, TaskSpec] = {
    OPINION: TaskSpec(
        OPINION, OpinionQA, "answer", OPINION_PAST, answer_accuracy, None, answer_feedback,
        MajorityPositionProgram, "most chosen position", True, ("accuracy",),
    ),
    RATING: TaskSpec(
        RATING, MovieRating, "rating",
        PastAnswers(MOVIE_RETRIEVAL, MOVIE_FIELDS, "rating", "Here are this person's ratings of other movies:"),
        rating_score, rating_score, rating_score, MeanRatingProgram, "mean rating", False, ("mae", "rmse", "score"),
        (10, 10),
    ),
    TAGGING: TaskSpec(
        TAGGING, MovieTagging, "tag",
        PastAnswers(MOVIE_RETRIEVAL, MOVIE_FIELDS, "tag", "Here are the tags this person gave other movies:"),
        answer_accuracy, None, answer_feedback, MostFrequentTagProgram, "most frequent tag", False, ("accuracy",),
        (8, 8),
    ),
}

_DATASET_TASKS = {MOVIELENS_RATING: RATING, MOVIELENS_TAG: TAGGING}

#: What each metric is called in the reports, and whether lower is better.
METRIC_LABELS = {"accuracy": "accuracy", "score": "score (1 - |err|/4.5)", "mae": "MAE (stars)",
                 "rmse": "RMSE (stars)"}
LOWER_IS_BETTER = frozenset({"mae", "rmse"})


def task_for(dataset: str) -> TaskSpec:
    """The task of a data set name or alias (`fermi_dspy.data.ALIASES`); every opinion data set is "opinion".

    Raises:
        ValueError: Unknown data set.
    """
    return TASKS[_DATASET_TASKS.get(canonical_dataset(dataset), OPINION)]


def predicted_rating(answer: Any) -> float | None:
    """The rating in a model's answer ("4.0"), or None when it holds none (an error, no answer)."""
    try:
        value = float(str(answer).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def rating_summary(test: Sequence[dspy.Example], answers: Sequence[Any],
                   scored: Sequence[bool] | None = None) -> dict[str, Any]:
    """MAE and RMSE (stars) of the answers that hold a rating, and how many did.

    An answer without a rating (the LM call failed, or the budget ran out) is left out of MAE and RMSE and counted
    in `n_test - answered`; the score (`rating_score`) counts it as 0, so a failure never looks like a good answer.

    Args:
        test: The held-out examples (with `rating`).
        answers: The model's answer per example, in order.
        scored: Which examples were scored at all (False: left unanswered by the budget); None: all.

    Returns:
        {"mae", "rmse" (None when nothing was answered), "answered"}.
    """
    pairs = []
    for index, (example, answer) in enumerate(zip(test, answers, strict=True)):
        predicted = predicted_rating(answer)
        if predicted is not None and (scored is None or scored[index]):
            pairs.append((float(example.rating), predicted))
    if not pairs:
        return {"mae": None, "rmse": None, "answered": 0}
    mae, rmse = rating_errors([g for g, _ in pairs], [p for _, p in pairs])
    return {"mae": mae, "rmse": rmse, "answered": len(pairs)}


def unrounded_floor_errors(train: Sequence[dspy.Example], test: Sequence[dspy.Example]) -> dict[str, float]:
    """MAE and RMSE of the user's unrounded mean training rating on the test ratings (the rounded floor's twin)."""
    mean = fmean(float(e.rating) for e in train)
    mae, rmse = rating_errors([float(e.rating) for e in test], [mean] * len(test))
    return {"mae_unrounded": mae, "rmse_unrounded": rmse}


__all__ = ["LOWER_IS_BETTER", "METRIC_LABELS", "OPINION", "RATING", "TAGGING", "TASKS", "TaskSpec",
           "predicted_rating", "rating_summary", "task_for", "unrounded_floor_errors"]
