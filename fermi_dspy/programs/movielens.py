"""Students for the LaMP-style MovieLens tasks: a person's star rating of a movie, and the tag they gave it.

Both answer by choosing, constrained per call like `OpinionQA` (`fermi_dspy.programs.choice`): the rating among the
whole stars 1-5 (LaMP-3's scale; MovieLens' half stars are compared as they are by `rating_score`), the tag by the
letter of one of the tags offered (LaMP-2's 15-tag vocabulary in `fermi_dspy.data.movielens`). Each prediction
carries the LM's probability of every choice when the LM returned log-probabilities.
"""

from collections.abc import Sequence

import dspy

from fermi_dspy.programs.choice import achoose, choose, format_options, option_letters

STARS = ("1", "2", "3", "4", "5")


def _movie(title: str, year: int | None, genres: Sequence[str]) -> dict[str, str]:
    return {"title": title, "year": "unknown" if year is None else str(year),
            "genres": ", ".join(genres) if genres else "(none listed)"}


class RateMovie(dspy.Signature):
    """Predict the star rating this person gives the movie, from 1 (hated it) to 5 (loved it)."""

    title: str = dspy.InputField()
    year: str = dspy.InputField(desc="the release year")
    genres: str = dspy.InputField()
    rating: str = dspy.OutputField(desc="the number of stars, a whole number from 1 to 5")


class MovieRating(dspy.Module):
    """A movie (title, year, genres) -> the person's star rating: `rating` (1.0-5.0) and `rating_probs`."""

    def __init__(self) -> None:
        super().__init__()
        self.predict = dspy.Predict(RateMovie)

    def forward(self, title: str, year: int | None, genres: Sequence[str]) -> dspy.Prediction:
        stars, probabilities = choose(self.predict, "rating", STARS, **_movie(title, year, genres))
        return dspy.Prediction(rating=float(stars), rating_probs=probabilities)

    async def aforward(self, title: str, year: int | None, genres: Sequence[str]) -> dspy.Prediction:
        stars, probabilities = await achoose(self.predict, "rating", STARS, **_movie(title, year, genres))
        return dspy.Prediction(rating=float(stars), rating_probs=probabilities)


class TagMovie(dspy.Signature):
    """Choose the tag this person gave the movie: the letter of exactly one of the tags listed."""

    title: str = dspy.InputField()
    year: str = dspy.InputField(desc="the release year")
    genres: str = dspy.InputField()
    options: str = dspy.InputField(desc="the tags, one per line, each after its letter")
    tag: str = dspy.OutputField(desc="the letter of the chosen tag")


class MovieTagging(dspy.Module):
    """A movie and the tag vocabulary -> the person's tag: `tag` (one of `options`), `letter`, `option_probs`."""

    def __init__(self) -> None:
        super().__init__()
        self.predict = dspy.Predict(TagMovie)

    def forward(self, title: str, year: int | None, genres: Sequence[str], options: Sequence[str]) -> dspy.Prediction:
        letters = option_letters(len(options))
        letter, probabilities = choose(self.predict, "tag", letters, options=format_options(options),
                                       **_movie(title, year, genres))
        return dspy.Prediction(tag=options[letters.index(letter)], letter=letter, option_probs=probabilities)

    async def aforward(self, title: str, year: int | None, genres: Sequence[str],
                       options: Sequence[str]) -> dspy.Prediction:
        letters = option_letters(len(options))
        letter, probabilities = await achoose(self.predict, "tag", letters, options=format_options(options),
                                              **_movie(title, year, genres))
        return dspy.Prediction(tag=options[letters.index(letter)], letter=letter, option_probs=probabilities)
