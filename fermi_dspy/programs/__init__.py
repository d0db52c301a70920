"""Student programs that ship with the library: what Fermi personalizes in the main job, the benchmark and runs."""

from fermi_dspy.programs.choice import achoose, choose, format_options, option_letters, stable_adapter, with_choices
from fermi_dspy.programs.movielens import MovieRating, MovieTagging, RateMovie, TagMovie
from fermi_dspy.programs.opinion_qa import AnswerSurveyQuestion, OpinionQA

__all__ = [
    "AnswerSurveyQuestion",
    "MovieRating",
    "MovieTagging",
    "OpinionQA",
    "RateMovie",
    "TagMovie",
    "achoose",
    "choose",
    "format_options",
    "option_letters",
    "stable_adapter",
    "with_choices",
]
