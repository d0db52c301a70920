"""PersonalizedProgram: the module `Fermi.compile` returns; routes each query to one of the user's learned prompts."""

import threading
from typing import Any

import dspy
import numpy as np

from fermi_dspy.selection import Embedder, PromptRouter, TfidfEmbedder, choose_prompt, embed, query_text
from fermi_dspy.variants import build_variant, compose_instruction


class _Derived:
    """Objects derived from the router (one program per prompt, arrays, the embedder), built once per router state.

    Not a Module, list or dict, so DSPy never saves or walks it; deep copies start empty.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[int, int] | None = None
        self.value: dict[str, Any] = {}

    def __deepcopy__(self, memo: dict) -> "_Derived":
        return _Derived()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def get(self, key: tuple[int, int], build: Any) -> dict[str, Any]:
        with self._lock:
            if self._key != key:
                self.value = build()
                self._key = key
            return self.value


class PersonalizedProgram(dspy.Module):
    """A student program personalized to one user by Fermi.

    It holds the user's kept prompts (best first), their scores on the user's past questions and those questions'
    embeddings. Each call picks a prompt (Retrieval-of-Prompt, or the single best) and runs the student with it.
    The user's past answers are never put into the answer prompt; they only choose the prompt. No LM is bound:
    the program runs on the LM configured in DSPy, like any DSPy program. `forward` is read-only and thread-safe.

    To load a saved program, construct it around the same student program class, then load::

        personal = PersonalizedProgram(OpinionQA())
        personal.load("user_123.json")

    A program compiled with a custom embedder needs it again: `PersonalizedProgram(OpinionQA(), embedder=...)`.

    Args:
        student: The program that was personalized (it is deep-copied, never changed).
        embedder: The embedder used at compile time, when it was not the default TF-IDF one.
    """

    def __init__(self, student: dspy.Module, *, embedder: Embedder | None = None) -> None:
        super().__init__()
        self.program = student.deepcopy()
        self.router = PromptRouter()
        self.embedder = embedder
        self._derived = _Derived()

    @property
    def prompts(self) -> list[str]:
        """The kept prompts, best first."""
        return list(self.router.prompts)

    @property
    def selection(self) -> str:
        return self.router.selection

    def _install(self, router: PromptRouter) -> None:
        """Adopt a router and show the best prompt in `self.program` (what outside tools and optimizers see)."""
        self.router = router
        predictors = dict(self.program.named_predictors())
        for name, base in router.base_instructions.items():
            predictors[name].signature = predictors[name].signature.with_instructions(
                compose_instruction(router.prompts[0], base)
            )

    def _build(self) -> dict[str, Any]:
        router = self.router
        variants = [build_variant(self.program, prompt, router.base_instructions) for prompt in router.prompts]
        embedder = self.embedder
        if router.embedder_state is not None:
            embedder = TfidfEmbedder.load_state(router.embedder_state)
        return {
            "variants": variants,
            "scores": np.asarray(router.scores, dtype=np.float64).reshape(len(router.prompts), -1),
            "means": np.asarray(router.mean_scores, dtype=np.float64),
            "embeddings": np.asarray(router.embeddings, dtype=np.float64),
            "embedder": embedder,
        }

    def _state(self) -> dict[str, Any]:
        return self._derived.get((id(self.router), self.router.version), self._build)

    def route(self, **inputs: Any) -> int:
        """The index (into `prompts`) of the prompt this program would answer these inputs with."""
        state = self._state()
        if self.router.selection == "best" or len(self.router.prompts) == 1:
            return choose_prompt(state["scores"], state["means"], None, self.router.num_retrieved)
        embedder = state["embedder"]
        if embedder is None:
            raise RuntimeError(
                "This program was compiled with a custom embedder, which is not saved. Pass it again: "
                "PersonalizedProgram(student, embedder=my_embedder).load(path)."
            )
        query = embed(embedder, [query_text(inputs, self.router.retrieval_fields)])[0]
        embeddings = state["embeddings"]
        if embeddings.shape[1] != query.shape[0]:
            raise ValueError(
                f"The query embedding has {query.shape[0]} dimensions but the stored ones have {embeddings.shape[1]}; "
                "pass the same embedder the program was compiled with."
            )
        return choose_prompt(state["scores"], state["means"], embeddings @ query, self.router.num_retrieved)

    def forward(self, **inputs: Any) -> dspy.Prediction:
        """Answer with the prompt chosen for these inputs."""
        return self._state()["variants"][self.route(**inputs)](**inputs)
