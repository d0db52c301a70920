"""Retrieved few-shot (Hwang et al. 2023 style): the profile plus the user's k most similar past answers in the prompt.

For each query, the user's k training questions most similar to it (TF-IDF over the user's own questions, the same
offline retrieval Fermi's Retrieval-of-Prompt uses) are written with the user's answers into the instruction, after
the profile. Nothing is learned; no LM call is made before answering.
"""

from collections.abc import Sequence

import dspy
import numpy as np

from fermi_dspy import Profile, TfidfEmbedder, render_profile, with_prompt
from fermi_dspy.profile import PROFILE_INTRO, PROFILE_TASK
from fermi_dspy.selection import embed, query_text

RETRIEVAL_FIELDS = ("question",)
PAST_ANSWERS_INTRO = "Here are this person's answers to other survey questions:"


def render_past_answers(examples: Sequence[dspy.Example]) -> str:
    """The retrieved past answers, one question and answer pair per block."""
    def text(value: object) -> str:
        return " ".join(str(value).split())

    blocks = [f"Question: {text(e.question)}\nThe person's answer: {text(e.answer)}" for e in examples]
    return "\n\n".join(blocks)


def fewshot_prompt(profile: Profile, examples: Sequence[dspy.Example]) -> str:
    """The instruction prefix: the profile, the retrieved past answers, then the personalization task."""
    parts = []
    rendered = render_profile(profile)
    if rendered:
        parts.append(f"{PROFILE_INTRO}\n{rendered}")
    if examples:
        parts.append(f"{PAST_ANSWERS_INTRO}\n\n{render_past_answers(examples)}")
    parts.append(PROFILE_TASK)
    return "\n\n".join(parts)


class RetrievedFewShot(dspy.Module):
    """The student with the profile and the k most similar past answers of the user in its instruction.

    Args:
        student: The program to answer with (deep-copied per query with the composed instruction).
        profile: The user's profile, or None.
        train: The user's past answers to retrieve from.
        k: How many past answers to show per query.
    """

    def __init__(self, student: dspy.Module, profile: Profile, train: Sequence[dspy.Example], *, k: int = 3) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        self.student = student.deepcopy()
        self.profile = profile
        self.train = list(train)
        self.k = k
        texts = [query_text(e.inputs(), RETRIEVAL_FIELDS) for e in self.train]
        self._embedder = TfidfEmbedder().fit(texts) if texts else None
        self._embeddings = embed(self._embedder, texts) if texts else np.zeros((0, 0))

    def retrieve(self, **inputs: object) -> list[dspy.Example]:
        """The k past answers most similar to the query (ties keep the training order)."""
        if not self.train or self._embedder is None:
            return []
        query = embed(self._embedder, [query_text(inputs, RETRIEVAL_FIELDS)])[0]
        similarity = self._embeddings @ query if self._embeddings.shape[1] else np.zeros(len(self.train))
        nearest = np.argsort(-similarity, kind="stable")[: self.k]
        return [self.train[i] for i in nearest]

    def forward(self, **inputs: object) -> dspy.Prediction:
        prompt = fewshot_prompt(self.profile, self.retrieve(**inputs))
        return with_prompt(self.student, prompt)(**inputs)
