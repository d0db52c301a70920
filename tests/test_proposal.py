"""What the proposer sees: memory rendering, the context budget, cleaning and dedupe of proposals."""

import dspy

from fermi_dspy.memory import PromptMemory, ScoredPrompt
from fermi_dspy.proposal import clean_proposal, prompt_key, render_demonstrations, render_memory
from fermi_dspy.repetition import loop_start, without_loop
from tests.scripted import topic_examples

EXAMPLES = topic_examples([f"topic{i}" for i in range(8)], supported={"topic0", "topic1", "topic2"})


def scored(prompt, scores, index, outputs=None):
    outputs = outputs or tuple("No" for _ in scores)
    return ScoredPrompt(prompt, tuple(scores), tuple(outputs), tuple(None for _ in scores), 0, index)


def memory():
    best = scored("best prompt", [0, 1, 1, 1, 1, 1, 0, 1], 0)
    middle = scored("middle prompt", [0, 0, 1, 1, 1, 1, 1, 0], 1)
    worst = scored("worst prompt", [0, 0, 0, 1, 1, 1, 1, 1], 2)
    return [worst, middle, best]


def test_layout_lists_full_failures_for_the_best_and_shared_plus_new_for_others():
    text = render_memory(memory(), EXAMPLES, threshold=1.0, budget_chars=10_000)
    assert text.index(":\nworst prompt") < text.index(":\nmiddle prompt") < text.index(":\nbest prompt")
    best_line = text.split("best prompt\n")[1].splitlines()[0]
    assert best_line == "Mis-aligned on 2 of 8: E1 (model answered 'No'), E2 (model answered 'No')"
    middle_line = text.split("middle prompt\n")[1].splitlines()[0]
    assert middle_line.startswith("Mis-aligned on 3 of 8: shares E1 with the best prompt; also E")
    # each mis-aligned example is written out once, with the person's answer
    assert text.count("question: Do you support topic0?") == 1
    assert "The person's answer: Yes" in text


def test_budget_keeps_the_best_prompts_failures_first_and_counts_the_rest():
    full = render_memory(memory(), EXAMPLES, threshold=1.0, budget_chars=10_000)
    small = render_memory(memory(), EXAMPLES, threshold=1.0, budget_chars=len(full) - 100)
    assert len(small) < len(full)
    assert "not shown for space" in small and "more not shown" in small
    assert "E1. question: Do you support topic0?" in small  # the best prompt's failure is kept
    assert all(p in small for p in ("worst prompt", "middle prompt", "best prompt"))


def test_opro_view_has_scores_only():
    text = render_memory(memory(), EXAMPLES, threshold=1.0, budget_chars=10_000, show_misaligned=False)
    assert "Mis-aligned" not in text and "person's answer" not in text
    assert "Prompt 3 (score 0.75):\nbest prompt" in text


def test_memory_ranking_and_ascending_view():
    store = PromptMemory(2)
    kept = store.merge(memory())
    assert [p.prompt for p in store.ranked()] == ["best prompt", "middle prompt"]
    assert [p.prompt for p in store.ascending()] == ["middle prompt", "best prompt"]
    assert [p.prompt for p in kept] == ["middle prompt", "best prompt"]
    tie = scored("newer tie", [0, 1, 1, 1, 1, 1, 0, 1], 9)
    assert store.merge([tie]) == [tie]
    assert [p.prompt for p in store.ranked()] == ["best prompt", "newer tie"]  # equal score: the older one first


def test_demonstrations_show_the_persons_answers_without_a_placeholder_to_copy():
    text = render_demonstrations(EXAMPLES[:2])
    assert text.startswith("Example 1:\nquestion: Do you support topic0?\noptions: A. Yes | B. No")
    assert "<PROMPT>" not in text  # small proposers copied the placeholder line as their "prompt"
    assert render_demonstrations([]) == "(no demonstrations)"


def test_clean_proposal_and_dedupe_key():
    assert clean_proposal("[Be yourself.]", max_chars=100) == "Be yourself."
    assert clean_proposal('New prompt: "Be yourself."', max_chars=100) == "Be yourself."
    assert clean_proposal("<PROMPT> text", max_chars=100) == "text"
    assert clean_proposal("x" * 50, max_chars=10) == "xxxxxxx..."
    assert clean_proposal(None, max_chars=10) == ""
    assert prompt_key("Be   Yourself") == prompt_key("be yourself")
    # The same prompt opening with "The person" instead of "This person" is no new prompt (seen in a real memory).
    assert prompt_key("The person is described as a professional.") == prompt_key(
        "This person is described as a professional.")
    assert prompt_key("This person supports unions.") != prompt_key("This person opposes unions.")


def test_example_with_several_labels_lists_each():
    example = dspy.Example(question="q", a="1", b="2").with_inputs("question")
    text = render_demonstrations([example])
    assert "The person's answer (a): 1" in text and "The person's answer (b): 2" in text


# Proposals the 0.5B proposer wrote for real panelists in a cold `fermi-dspy run` (2026-12-01): it fell into a loop
# and ran to its token limit.
LOOPING = ("In South, high school graduate, white person, 65+, not married, conservative, not selected, not selected, "
           "Republican, less than $30,000, conservative, not selected, Republican, not selected, less than $30,000, "
           "conservative, not selected, Republican, not selected, less than $30,000, conservative, not selected, "
           "Republican, not selected, less than $30,000")


def test_a_looping_proposal_is_cut_where_it_starts_to_repeat():
    cleaned = clean_proposal(LOOPING, max_chars=1500)
    assert cleaned == (
        "In South, high school graduate, white person, 65+, not married, conservative, not selected, not selected, "
        "Republican, less than $30,000, conservative, not selected, Republican, not selected")
    assert cleaned.count("less than $30,000") == 1
    assert without_loop("not selected, not selected, not selected, not selected, not selected") == "not selected"


def test_the_loop_is_found_as_it_is_generated_where_the_whole_text_is_cut():
    """The engine checks the text so far; the first prefix it stops at gives the same cut as the whole text."""
    first = next(n for n in range(len(LOOPING) + 1) if loop_start(LOOPING[:n], complete_words_only=True) is not None)
    assert first < len(LOOPING)
    assert without_loop(LOOPING[:first]) == without_loop(LOOPING)
    twice = "conservative, not selected, Republican, less than conservative, not selected, Republican, less than"
    assert loop_start(twice, complete_words_only=True) is None  # the last "than" may still grow ("thank")
    assert loop_start(twice + " ", complete_words_only=True) == loop_start(twice) == twice.index("than ") + 5


def test_a_quoted_proposal_stopped_at_its_loop_is_cleaned_like_the_whole_one():
    """The stopped text lacks the closing quote; the cut comes before the wrappers are stripped, so both agree."""
    whole = ('"This person is a conservative Republican voter. This person is a conservative Republican voter from '
             'Texas."')
    stopped = next(whole[:n] for n in range(len(whole)) if loop_start(whole[:n], complete_words_only=True) is not None)
    assert clean_proposal(stopped, max_chars=1500) == clean_proposal(whole, max_chars=1500) == (
        "This person is a conservative Republican voter.")
    assert clean_proposal('"Pro-life" people are this person\'s allies.', max_chars=1500).startswith('"Pro-life"')


def test_a_proposal_without_a_loop_is_unchanged():
    profile_prompt = ("A person can be described as follows:\n- Region: West\n- Age: 50-64\n- Sex: Female\n"
                      "Answer every question exactly as this person would.")
    assert without_loop(profile_prompt) == profile_prompt
    # A phrase used twice is no loop unless six words in a row repeat.
    text = "Answer as a Republican would about guns, and as a Republican would about taxes."
    assert without_loop(text) == text
