"""PersonalizedProgram: the module `Fermi.compile` returns; routes each query to one of the user's learned prompts."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dspy
import numpy as np

from fermi_dspy.personalize import compose_instruction, personalizable_copy, personalized
from fermi_dspy.selection import Embedder, PromptRouter, TfidfEmbedder, choose_prompt, embed, query_text


class _RoutingArrays:
    """NumPy views of the router's data and its embedder, rebuilt whenever the router's data objects change.

    Not a Module, list or dict, so DSPy never saves or walks it; copies start empty.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self.value: dict[str, Any] = {}

    def __deepcopy__(self, memo: dict) -> "_RoutingArrays":
        return _RoutingArrays()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def get(self, router: PromptRouter, embedder: Embedder | None) -> dict[str, Any]:
        key = (id(router), id(router.prompts), id(router.scores), id(router.embeddings), id(router.embedder_state),
               id(embedder))
        with self._lock:
            if self._key != key:
                if router.embedder_state is not None:
                    embedder = TfidfEmbedder.load_state(router.embedder_state)
                self.value = {
                    "scores": np.asarray(router.scores, dtype=np.float64).reshape(len(router.prompts), -1),
                    "means": np.asarray(router.mean_scores, dtype=np.float64),
                    "embeddings": np.asarray(router.embeddings, dtype=np.float64),
                    "embedder": embedder,
                }
                self._key = key
            return self.value


class PersonalizedProgram(dspy.Module):
    """A student program personalized to one user by Fermi.

    It holds the user's kept prompts (best first), their scores on the user's past questions and those questions'
    embeddings. Each call picks a prompt (Retrieval-of-Prompt, or the single best) and runs the student's own
    predictors with it placed before their instructions (see `fermi_dspy.personalize`). The predictors that run are
    the ones `named_predictors()` lists, so DSPy's traces, demos, `set_lm`, `reset_copy` and other optimizers see and
    change what really runs; an optimizer that rewrites a personalized predictor's instruction rewrites the task
    instruction, and the personal prompts stay in front of it. The user's past answers are never put into the answer
    prompt; they only choose the prompt. No LM is bound. `forward` and `aforward` are read-only and thread-safe.

    To load a saved program, construct it around the same student program class, then load::

        personal = PersonalizedProgram(OpinionQA())
        personal.load("user_123.json")

    A program compiled with a custom embedder needs it again: `PersonalizedProgram(OpinionQA(), embedder=...)`.

    Args:
        student: The program that was personalized (it is deep-copied, never changed).
        router: The learned routing (as `Fermi.compile` builds it); None for an empty program to `load` into.
        embedder: The embedder used at compile time, when it was not the default TF-IDF one.
    """

    def __init__(self, student: dspy.Module, *, router: PromptRouter | None = None,
                 embedder: Embedder | None = None) -> None:
        super().__init__()
        self.program = personalizable_copy(student)
        self.router = router if router is not None else PromptRouter()
        self.embedder = embedder
        self._arrays = _RoutingArrays()

    @property
    def prompts(self) -> list[str]:
        """The kept prompts, best first."""
        return list(self.router.prompts)

    @property
    def selection(self) -> str:
        return self.router.selection

    def load_state(self, state: dict[str, Any], **kwargs: Any) -> "PersonalizedProgram":
        super().load_state(state, **kwargs)
        # Programs saved before predictors were personalized per call stored the best prompt in the instruction.
        predictors = dict(self.program.named_predictors())
        for name, base in self.router.base_instructions.items():
            predictor = predictors.get(name)
            if predictor is not None and predictor.signature.instructions == compose_instruction(
                self.router.prompts[0], base
            ) != base:
                predictor.signature = predictor.signature.with_instructions(base)
        return self

    @property
    def best_index(self) -> int:
        """The index (into `prompts`) of the prompt with the best overall score: the one ``selection="best"`` uses."""
        state = self._arrays.get(self.router, self.embedder)
        return choose_prompt(state["scores"], state["means"], None, self.router.num_retrieved)

    def route(self, **inputs: Any) -> int:
        """The index (into `prompts`) of the prompt this program would answer these inputs with."""
        router = self.router
        state = self._arrays.get(router, self.embedder)
        if router.selection == "best" or len(router.prompts) == 1:
            return choose_prompt(state["scores"], state["means"], None, router.num_retrieved)
        embedder = state["embedder"]
        if embedder is None:
            raise RuntimeError(
                "This program was compiled with a custom embedder, which is not saved. Pass it again: "
                "PersonalizedProgram(student, embedder=my_embedder).load(path)."
            )
        query = embed(embedder, [query_text(inputs, router.retrieval_fields)])[0]
        embeddings = state["embeddings"]
        if embeddings.shape[1] != query.shape[0]:
            raise ValueError(
                f"The query embedding has {query.shape[0]} dimensions but the stored ones have {embeddings.shape[1]}; "
                "pass the same embedder the program was compiled with."
            )
        return choose_prompt(state["scores"], state["means"], embeddings @ query, router.num_retrieved)

    @contextmanager
    def with_prompt(self, index: int) -> Iterator[None]:
        """Run the block with the program's personalized predictors using `prompts[index]`."""
        prompt = self.router.prompts[index]
        predictors = dict(self.program.named_predictors())
        targets = {predictors[name]: prompt for name in self.router.base_instructions if name in predictors}
        with personalized(targets):
            yield

    def forward(self, **inputs: Any) -> dspy.Prediction:
        """Answer with the prompt chosen for these inputs."""
        with self.with_prompt(self.route(**inputs)):
            return self.program(**inputs)

    async def aforward(self, **inputs: Any) -> dspy.Prediction:
        """Answer with the prompt chosen for these inputs, asynchronously."""
        with self.with_prompt(self.route(**inputs)):
            return await self.program.acall(**inputs)
