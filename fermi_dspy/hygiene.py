"""Proposal hygiene: reject proposer outputs that are not instructions, each with a named reason.

Small proposers copy what they see. Observed on a real panelist: the best "prompt" kept for user 112238 was
`E4. question: Which of the following would you say you prefer for getting news? options: A. ... The person's
answer: Television`, an entry of the meta-prompt's catalog of mis-aligned examples, which scored 0.625 on 8 training
answers by luck and 0.25 on held-out ones. A rejected proposal is re-sampled within the budget and counted.
"""

import re
from collections.abc import Iterable

#: Reasons a proposal is rejected, in the order they are checked.
REJECTION_REASONS = ("empty", "meta_prompt_structure", "too_short", "unfinished", "training_question", "question",
                     "duplicate")

MIN_PROMPT_CHARS = 20
MIN_PROMPT_WORDS = 4

_STRUCTURE = [
    re.compile(r"(?:^|\s)E\d+\.\s"),  # catalog labels of mis-aligned examples: "E4. question: ..."
    re.compile(r"\bPrompt \d+ \(score", re.IGNORECASE),
    re.compile(r"The person's answer(?: \([^)]*\))?:", re.IGNORECASE),
    re.compile(r"\bMis-aligned on \d+ (?:out )?of \d+", re.IGNORECASE),  # "... on 5 of 8", "... on 5 out of 8"
    re.compile(r"\bE\d+(?:\s*,\s*E\d+)+"),  # a list of the catalog's labels: "shares E1, E2, E3"
    re.compile(r"\bmodel answered '"),
    re.compile(r"\bthe model's answers?\b", re.IGNORECASE),  # the meta-prompt's account of how prompts are scored
    re.compile(r"^\s*(?:question|options)\s*:", re.IGNORECASE | re.MULTILINE),
    re.compile(r"<PROMPT>|\[\[ ## "),
    re.compile(r"^\s*Example \d+:", re.MULTILINE),
    re.compile(r"^\s*(?:Question|Prompt) \d+\s*:", re.IGNORECASE | re.MULTILINE),  # "Question 1: ...", "Prompt 2:"
    re.compile(r"^\s*Prompt\s*:", re.IGNORECASE),
    re.compile(r"^\s*[A-Z]\.\s"),  # an option copied with its letter: "B. Play a shared leadership role"
]


def structure_start(text: str) -> int | None:
    """Where the first copy of the meta-prompt's structure begins in `text`, or None if there is none."""
    starts = [match.start() for pattern in _STRUCTURE if (match := pattern.search(text))]
    return min(starts) if starts else None


#: A full stop, ! or ? before whitespace, or a line break; not the full stop of an initial such as the "S." of "U.S."
_SENTENCE_END = re.compile(r"(?<!\b[A-Z])[.!?](?=\s)|\n")


def instruction_before_structure(text: str) -> str:
    """The whole sentences a proposal wrote before it started copying the meta-prompt's structure ("" if none).

    Small proposers often write an instruction and then go on to copy a catalog entry, e.g. (0.5B proposer)
    "This person is a conservative Republican from the South who distrusts institutions.\nMis-aligned: E0. question:
    Do you think ...". The sentence in which the copy begins is dropped with it; text without a copy is returned
    unchanged.
    """
    start = structure_start(text)
    if start is None:
        return text
    # Searched in the whole text: the whitespace after a sentence's full stop may be where the copy's match begins.
    ends = [match.end() for match in _SENTENCE_END.finditer(text) if match.end() <= start]
    return text[: ends[-1]].strip() if ends else ""


def _letters(text: str) -> str:
    """Lower-case letters and digits only ("the U.S." and "the US" compare equal)."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


#: Letters (and digits) in a row that a proposal may share with a training question before it counts as a copy.
COPIED_RUN = 30


def copies_training_question(text: str, questions: Iterable[str]) -> bool:
    """Whether the proposal contains one of the user's training questions, the first 60% of one, or any
    `COPIED_RUN` letters of one in a row (a quoted question with a word changed, e.g. "lead" -> "led")."""
    proposal = _letters(text)
    for question in questions:
        q = _letters(question)
        if len(q) < MIN_PROMPT_CHARS:
            continue
        if q[: max(MIN_PROMPT_CHARS, int(len(q) * 0.6))] in proposal:
            return True
        if any(q[start:start + COPIED_RUN] in proposal for start in range(0, max(1, len(q) - COPIED_RUN + 1), 3)):
            return True
    return False


def is_question(text: str) -> bool:
    """Whether the proposal asks rather than instructs: it ends with "?", or most of its sentences are questions."""
    stripped = text.strip().strip("\"'`")
    if stripped.endswith("?"):
        return True
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", stripped) if s]
    asked = sum(1 for s in sentences if s.endswith("?"))
    return len(sentences) >= 2 and asked * 2 > len(sentences)


def rejection_reason(text: str, training_questions: Iterable[str] = (), task: str = "") -> str | None:
    """Why a proposal is not an acceptable instruction (one of `REJECTION_REASONS`), or None if it is.

    Args:
        text: The cleaned proposal.
        training_questions: The user's training questions (a proposal must not reproduce one).
        task: The task instructions the proposer was shown (a proposal that only repeats them adds nothing).
    """
    stripped = text.strip()
    if not stripped:
        return "empty"
    if structure_start(stripped) is not None or (task and _letters(stripped) == _letters(task)):
        return "meta_prompt_structure"
    if len(stripped) < MIN_PROMPT_CHARS or len(stripped.split()) < MIN_PROMPT_WORDS:
        return "too_short"
    if stripped.endswith(":"):  # a lead-in with nothing after it: "The person's actual views and values are:"
        return "unfinished"
    if copies_training_question(stripped, training_questions):
        return "training_question"
    if is_question(stripped):
        return "question"
    return None
