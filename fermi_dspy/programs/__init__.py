"""Student programs that ship with the library: what Fermi personalizes in the main job, the benchmark and runs."""

from fermi_dspy.programs.choice import format_options, option_letters, with_choices
from fermi_dspy.programs.opinion_qa import AnswerSurveyQuestion, OpinionQA

__all__ = ["AnswerSurveyQuestion", "OpinionQA", "format_options", "option_letters", "with_choices"]
