"""The OpinionQA student now lives in the library (`fermi_dspy.programs`); this name is kept for old imports."""

from fermi_dspy.programs.opinion_qa import AnswerSurveyQuestion, OpinionQA

__all__ = ["AnswerSurveyQuestion", "OpinionQA"]
