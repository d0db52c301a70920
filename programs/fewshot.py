"""Retrieved few-shot (Hwang et al. 2023; LaMP's retrieval baseline): the profile plus the user's k most similar past
answers in the prompt.

For each query, the user's k training examples most similar to it (TF-IDF over the user's own examples, the same
offline retrieval Fermi's Retrieval-of-Prompt uses) are written with the user's answers into the instruction, after
the profile (if any). Nothing is learned; no LM call is made before answering.

What is retrieved on and shown is the task's (`PastAnswers`): for opinion questions the question and the person's answer
(the default); for the MovieLens tasks the movie's title, year and genres and the person's rating or tag.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import dspy
import numpy as np

from fermi_dspy import Profile, TfidfEmbedder, render_profile, with_prompt
from fermi_dspy.profile import PROFILE_INTRO, PROFILE_TASK
from fermi_dspy.selection import embed, query_text

RETRIEVAL_FIELDS = ("question",)
PAST_ANSWERS_INTRO = "Here are this person's answers to other survey questions:"


@dataclass(frozen=True)
class PastAnswers:
    """How a task's past examples are retrieved and shown.

    Attributes:
        retrieval_fields: Input fields embedded to find the most similar past examples.
        shown_fields: Input fields written for each past example, in order ("Question: ...").
        label: The label field, written as "The person's <label>: ...".
        intro: The sentence before the past examples.
    """

    retrieval_fields: tuple[str, ...] = RETRIEVAL_FIELDS
    shown_fields: tuple[str, ...] = ("question",)
    label: str = "answer"
    intro: str = PAST_ANSWERS_INTRO


OPINION_PAST = PastAnswers()


def _text(value: object) -> str:
    """A field's value on one line: lists joined by ", ", numbers without a trailing ".0", None as "unknown"."""
    if value is None:
        return "unknown"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value) if value else "(none listed)"
    if isinstance(value, float):
        return f"{value:g}"
    return " ".join(str(value).split())


def render_past_answers(examples: Sequence[dspy.Example], past: PastAnswers = OPINION_PAST) -> str:
    """The retrieved past examples, one block each: the shown fields, then the person's answer."""
    blocks = []
    for example in examples:
        lines = [f"{name.capitalize()}: {_text(example.get(name))}" for name in past.shown_fields]
        lines.append(f"The person's {past.label}: {_text(example[past.label])}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def fewshot_prompt(profile: Profile, examples: Sequence[dspy.Example], past: PastAnswers = OPINION_PAST) -> str:
    """The instruction prefix: the profile, the retrieved past answers, then the personalization task."""
    parts = []
    rendered = render_profile(profile)
    if rendered:
        parts.append(f"{PROFILE_INTRO}\n{rendered}")
    if examples:
        parts.append(f"{past.intro}\n\n{render_past_answers(examples, past)}")
    parts.append(PROFILE_TASK)
    return "\n\n".join(parts)


class RetrievedFewShot(dspy.Module):
    """The student with the profile and the k most similar past answers of the user in its instruction.

    Args:
        student: The program to answer with (deep-copied per query with the composed instruction).
        profile: The user's profile, or None.
        train: The user's past answers to retrieve from.
        k: How many past answers to show per query.
        past: What is retrieved on and shown (default: opinion questions and answers).
    """

    def __init__(self, student: dspy.Module, profile: Profile, train: Sequence[dspy.Example], *, k: int = 3,
                 past: PastAnswers = OPINION_PAST) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        self.student = student.deepcopy()
        self.profile = profile
        self.train = list(train)
        self.k = k
        self.past = past
        texts = [query_text(e.inputs(), past.retrieval_fields) for e in self.train]
        self._embedder = TfidfEmbedder().fit(texts) if texts else None
        self._embeddings = embed(self._embedder, texts) if texts else np.zeros((0, 0))

    def retrieve(self, **inputs: object) -> list[dspy.Example]:
        """The k past answers most similar to the query (ties keep the training order)."""
        if not self.train or self._embedder is None:
            return []
        query = embed(self._embedder, [query_text(inputs, self.past.retrieval_fields)])[0]
        similarity = self._embeddings @ query if self._embeddings.shape[1] else np.zeros(len(self.train))
        nearest = np.argsort(-similarity, kind="stable")[: self.k]
        return [self.train[i] for i in nearest]

    def forward(self, **inputs: object) -> dspy.Prediction:
        prompt = fewshot_prompt(self.profile, self.retrieve(**inputs), self.past)
        return with_prompt(self.student, prompt)(**inputs)
