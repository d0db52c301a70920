"""Retrieval-of-Prompt: pick, for each query, the kept prompt that did best on the user's most similar questions.

Also holds the offline default embedder (TF-IDF fitted on the user's own questions).
"""

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias

import numpy as np
from dspy.predict.parameter import Parameter

Selection: TypeAlias = Literal["retrieval", "best"]
SELECTION_MODES = ("retrieval", "best")

from fermi_dspy.protocols import Embedder  # noqa: E402 (the extension points are declared in one place)


def check_selection(selection: str) -> None:
    """Raise a clear error for an unknown selection mode."""
    if selection not in SELECTION_MODES:
        raise ValueError(
            f"selection={selection!r} is not a selection mode; use 'retrieval' (Retrieval-of-Prompt, the paper's) "
            "or 'best' (the single best prompt)."
        )


def query_text(inputs: Mapping[str, Any], fields: Sequence[str] | None) -> str:
    """The text embedded for retrieval: the chosen input fields (all inputs when None), "name: value" per line."""
    names = list(inputs) if fields is None else [name for name in fields if name in inputs]
    parts = []
    for name in names:
        value = inputs[name]
        if isinstance(value, list | tuple):
            value = " | ".join(str(v) for v in value)
        parts.append(f"{name}: {value}")
    return "\n".join(parts)


def normalize_rows(matrix: Any) -> np.ndarray:
    """L2-normalize each row (rows of zeros stay zero)."""
    array = np.asarray(matrix, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)


class TfidfEmbedder:
    """TF-IDF over word unigrams and bigrams, fitted on one user's own training questions; needs no download.

    It has no notion of synonyms (only shared words count), but is deterministic, fast and fully serializable.
    """

    def __init__(self, vocabulary: Mapping[str, int] | None = None, idf: Sequence[float] | None = None) -> None:
        self.vocabulary = dict(vocabulary) if vocabulary is not None else None
        self.idf = list(idf) if idf is not None else None
        self._vectorizer = None
        if self.vocabulary is not None and self.idf is not None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            self._vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, vocabulary=self.vocabulary)
            self._vectorizer.idf_ = np.asarray(self.idf, dtype=np.float64)

    def fit(self, texts: Sequence[str]) -> "TfidfEmbedder":
        """Fit on the user's texts; returns a fitted embedder."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        try:
            fitted = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(list(texts))
        except ValueError:  # only stop words or empty texts: fall back to an empty vocabulary
            return TfidfEmbedder({}, [])
        vocabulary = {term: int(index) for term, index in fitted.vocabulary_.items()}
        return TfidfEmbedder(vocabulary, fitted.idf_.tolist())

    def __call__(self, texts: list[str]) -> np.ndarray:
        if self._vectorizer is None:
            if self.vocabulary is None:
                raise RuntimeError("TfidfEmbedder must be fitted (TfidfEmbedder().fit(texts)) before use.")
            return np.zeros((len(texts), 0))
        return self._vectorizer.transform(list(texts)).toarray()

    def dump_state(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary or {}, "idf": self.idf or []}

    @classmethod
    def load_state(cls, state: Mapping[str, Any]) -> "TfidfEmbedder":
        return cls(state["vocabulary"], state["idf"])


def embed(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """Embed texts with any embedder and L2-normalize the rows."""
    return normalize_rows(embedder(texts))


def choose_prompt(
    scores: np.ndarray,
    mean_scores: np.ndarray,
    similarities: np.ndarray | None,
    num_retrieved: int,
) -> int:
    """Retrieval-of-Prompt's choice for one query.

    Args:
        scores: (prompts, examples) score matrix on the user's past questions.
        mean_scores: Each prompt's overall mean score.
        similarities: The query's similarity to each past question, or None for "best".
        num_retrieved: How many of the most similar questions decide.

    Returns:
        The index of the prompt with the highest total score on the `num_retrieved` most similar questions; ties go
        to the higher overall score, then to the lower index. With no similarity signal, the best prompt overall.
    """
    overall = [(-mean_scores[p], p) for p in range(len(mean_scores))]
    if similarities is None or scores.shape[1] == 0 or not np.any(similarities > 0):
        return min(overall)[1]
    nearest = np.argsort(-similarities, kind="stable")[:num_retrieved]
    local = scores[:, nearest].sum(axis=1)
    return min((-local[p], -mean_scores[p], p) for p in range(len(mean_scores)))[2]


class PromptRouter(Parameter):
    """The learned routing state of a personalized program (JSON-serializable, saved with the program).

    Being a `dspy.Parameter`, it is saved and loaded with any program that contains the personalized program. Like
    the instructions other DSPy optimizers learn, it survives `reset_copy()`: `reset()` keeps it (demos are what
    DSPy resets). Treat its lists as read-only; `load_state` replaces them.

    Args:
        prompts: Kept prompts, best first.
        base_instructions: The personalized predictors, by name, with their instruction at compile time (the prompt
            is placed before each predictor's current instruction at call time).
        scores: (prompts, examples) metric scores on the user's past questions.
        embeddings: Normalized embeddings of those past questions.
        selection: "retrieval" or "best".
        num_retrieved: Past questions consulted per query.
        retrieval_fields: Input fields embedded for retrieval (None: all inputs).
        embedder_state: The TF-IDF embedder's state, or None when a custom embedder was used.
        example_keys: A key (`fermi_dspy.identity.example_key`) per past question, in the order of the scores'
            columns: the optimization examples first, then any valset examples.
        num_optimization: How many of those columns are optimization examples (None for programs saved before
            this was recorded; they cannot be updated with `init=`).
        demonstration_keys: Keys of the answers shown to the proposer.
        outputs: The model's answer per prompt and optimization example (what an update shows the proposer).
        aligned: The metric's alignment verdict per prompt and optimization example (None where it gave none).
        profile_key: `fermi_dspy.identity.profile_key` of the profile compiled with.
    """

    def __init__(
        self,
        *,
        prompts: Sequence[str] = ("",),
        base_instructions: Mapping[str, str] | None = None,
        scores: Sequence[Sequence[float]] | None = None,
        embeddings: Sequence[Sequence[float]] = (),
        selection: str = "best",
        num_retrieved: int = 3,
        retrieval_fields: Sequence[str] | None = None,
        embedder_state: Mapping[str, Any] | None = None,
        example_keys: Sequence[str] = (),
        num_optimization: int | None = None,
        demonstration_keys: Sequence[str] = (),
        outputs: Sequence[Sequence[str]] = (),
        aligned: Sequence[Sequence[bool | None]] = (),
        profile_key: str | None = None,
    ) -> None:
        check_selection(selection)
        self.prompts = list(prompts)
        self.base_instructions = dict(base_instructions or {})
        self.scores = [list(map(float, row)) for row in (scores if scores is not None else [[] for _ in prompts])]
        self.embeddings = [list(map(float, row)) for row in embeddings]
        self.selection = selection
        self.num_retrieved = int(num_retrieved)
        self.retrieval_fields = None if retrieval_fields is None else list(retrieval_fields)
        self.embedder_state = None if embedder_state is None else dict(embedder_state)
        self.example_keys = list(example_keys)
        self.num_optimization = num_optimization
        self.demonstration_keys = list(demonstration_keys)
        self.outputs = [list(row) for row in outputs]
        self.aligned = [list(row) for row in aligned]
        self.profile_key = profile_key
        self._check()

    def _check(self) -> None:
        if not self.prompts:
            raise ValueError("A PromptRouter needs at least one prompt.")
        if len(self.scores) != len(self.prompts):
            raise ValueError(f"Corrupt router state: {len(self.prompts)} prompts but {len(self.scores)} score rows.")

    def reset(self) -> None:
        """Keep the learned routing: DSPy's `reset_copy()` resets demos, not what an optimizer learned."""

    @property
    def mean_scores(self) -> list[float]:
        return [float(np.mean(row)) if row else 0.0 for row in self.scores]

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        return {
            "prompts": list(self.prompts),
            "base_instructions": dict(self.base_instructions),
            "scores": [list(map(float, row)) for row in self.scores],
            "embeddings": [list(map(float, row)) for row in self.embeddings],
            "selection": self.selection,
            "num_retrieved": self.num_retrieved,
            "retrieval_fields": None if self.retrieval_fields is None else list(self.retrieval_fields),
            "embedder_state": self.embedder_state,
            "example_keys": list(self.example_keys),
            "num_optimization": self.num_optimization,
            "demonstration_keys": list(self.demonstration_keys),
            "outputs": [list(row) for row in self.outputs],
            "aligned": [list(row) for row in self.aligned],
            "profile_key": self.profile_key,
        }

    def load_state(self, state: Mapping[str, Any]) -> "PromptRouter":
        check_selection(state["selection"])
        self.prompts = list(state["prompts"])
        self.base_instructions = dict(state["base_instructions"])
        self.scores = [list(row) for row in state["scores"]]
        self.embeddings = [list(row) for row in state["embeddings"]]
        self.selection = state["selection"]
        self.num_retrieved = int(state["num_retrieved"])
        self.retrieval_fields = state["retrieval_fields"]
        self.embedder_state = state["embedder_state"]
        # Recorded since incremental updates exist; older saved programs load without them (and cannot be updated).
        self.example_keys = list(state.get("example_keys") or [])
        self.num_optimization = state.get("num_optimization")
        self.demonstration_keys = list(state.get("demonstration_keys") or [])
        self.outputs = [list(row) for row in state.get("outputs") or []]
        self.aligned = [list(row) for row in state.get("aligned") or []]
        self.profile_key = state.get("profile_key")
        self._check()
        return self
