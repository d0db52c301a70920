"""The student for per-user opinion QA: a survey question and its options -> the person's answer."""

from collections.abc import Sequence
from typing import Any

import dspy

from fermi_dspy.logprobs import choice_probabilities
from fermi_dspy.programs.choice import format_options, option_letters, stable_adapter, with_choices


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

    def _request(self, question: str, options: Sequence[str]) -> tuple[tuple[str, ...], dict[str, Any]]:
        letters = option_letters(len(options))
        signature = with_choices(self.predict.signature, "answer", letters)
        return letters, {"question": question, "options": format_options(options), "signature": signature}

    @staticmethod
    def _answer(prediction: dspy.Prediction, options: Sequence[str], letters: tuple[str, ...]) -> dspy.Prediction:
        letter = str(prediction.answer).strip()
        if letter not in letters:
            raise ValueError(f"The LM answered {prediction.answer!r}, not one of the letters {list(letters)}.")
        return dspy.Prediction(
            answer=options[letters.index(letter)],
            letter=letter,
            option_probs=choice_probabilities(prediction.get("logprobs"), letters),
        )

    def forward(self, question: str, options: Sequence[str]) -> dspy.Prediction:
        letters, request = self._request(question, options)
        with dspy.context(adapter=stable_adapter(dspy.settings.adapter)):
            prediction = self.predict(**request)
        return self._answer(prediction, options, letters)

    async def aforward(self, question: str, options: Sequence[str]) -> dspy.Prediction:
        letters, request = self._request(question, options)
        with dspy.context(adapter=stable_adapter(dspy.settings.adapter)):
            prediction = await self.predict.acall(**request)
        return self._answer(prediction, options, letters)
