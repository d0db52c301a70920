"""The student program for per-user opinion QA: a survey question and its options -> the person's answer."""

import dspy


class AnswerSurveyQuestion(dspy.Signature):
    """Answer the multiple-choice survey question with exactly one of the given options."""

    question: str = dspy.InputField()
    options: list[str] = dspy.InputField(desc="the possible answers")
    answer: str = dspy.OutputField(desc="the chosen option, copied exactly from the options")


class OpinionQA(dspy.Module):
    """Answers a survey question as a plain DSPy program (no personalization of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.predict = dspy.Predict(AnswerSurveyQuestion)

    def forward(self, question: str, options: list[str]) -> dspy.Prediction:
        return self.predict(question=question, options=options)
