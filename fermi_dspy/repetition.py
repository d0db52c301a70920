"""Text that starts repeating itself: where a small model's loop begins.

Small models fall into loops until the token limit, e.g. (0.5B proposer, a real panelist) "In South, high school
graduate, white person, 65+, not married, conservative, not selected, Republican, less than $30,000, conservative,
not selected, Republican, less than $30,000, ...". A loop starts at the first run of `LOOP_WORDS` words (compared
without case and punctuation) that already occurred. The proposer cuts its proposals there (`without_loop`) and the
local engine stops generating there (`loop_start` on the text so far), which gives the same proposal sooner.
"""

import re

#: Words in a row that, seen a second time, mark where a text started to loop.
LOOP_WORDS = 6


def loop_start(text: str, words: int = LOOP_WORDS, *, complete_words_only: bool = False) -> int | None:
    """Where the first already-seen run of `words` words begins in `text`, or None if no run repeats.

    Args:
        text: The text to search.
        words: The run length.
        complete_words_only: Ignore a last word that may still grow (text being generated that does not end in
            whitespace), so that a run is only judged once all its words are final.
    """
    spans = [(m.start(), re.sub(r"\W", "", m.group().lower())) for m in re.finditer(r"\S+", text)]
    if complete_words_only and text and not text[-1].isspace():
        spans = spans[:-1]
    seen: set[tuple[str, ...]] = set()
    for i in range(len(spans) - words + 1):
        gram = tuple(word for _, word in spans[i : i + words])
        if gram in seen:
            return spans[i][0]
        seen.add(gram)
    return None


def without_loop(text: str, words: int = LOOP_WORDS) -> str:
    """The text up to where it starts repeating itself (see `loop_start`); text with no repeated run is unchanged."""
    start = loop_start(text, words)
    return text if start is None else text[:start].rstrip(" \t\n,;:-")
