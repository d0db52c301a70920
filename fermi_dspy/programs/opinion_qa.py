"""The student for per-user opinion QA: a survey question and its options -> the person's answer."""

from collections.abc import Sequence

import dspy

from fermi_dspy.programs.choice import achoose, choose, format_options, option_letters


class AnswerSurveyQuestion(dspy.Signature):
    """Answer the multiple-choice survey question with the letter of exactly one of its options."""

    question: str = dspy.InputField()
    options: str = dspy.InputField(desc="the possible answers, one per line, each after its letter")
    answer: str = dspy.OutputField(desc="the letter of the chosen option")


class OpinionQA(dspy.Module):
    """Answers a survey question with one of its options (no personalization of its own).

    The predictor sees the options lettered and must reply with one of this question's letters: the answer is
    always an option, on every LM (see `fermi_dspy.programs.choice`). The prediction holds:

    * `answer`: the chosen option's text;
    * `letter`: its letter;
    * `option_probs`: the LM's probability of each option, when the LM returned log-probabilities (call it with
      `logprobs=True, top_logprobs=20`), else None. `fermi_dspy.answer_probability` scores with them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.predict = dspy.Predict(AnswerSurveyQuestion)

    def forward(self, question: str, options: Sequence[str]) -> dspy.Prediction:
        letters = option_letters(len(options))
        letter, probabilities = choose(self.predict, "answer", letters, question=question,
                                       options=format_options(options))
        return dspy.Prediction(answer=options[letters.index(letter)], letter=letter, option_probs=probabilities)

    async def aforward(self, question: str, options: Sequence[str]) -> dspy.Prediction:
        letters = option_letters(len(options))
        letter, probabilities = await achoose(self.predict, "answer", letters, question=question,
                                              options=format_options(options))
        return dspy.Prediction(answer=options[letters.index(letter)], letter=letter, option_probs=probabilities)
