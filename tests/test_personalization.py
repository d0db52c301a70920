"""Answers are always an option, the soft per-user score, and proposal hygiene (scripted LMs, synthetic data).

The degenerate proposals below are real: they were produced by the local Qwen2.5-Coder proposers on OpinionQA
panelist 112238 / 101224 (the first is the "prompt" a user once kept as their best).
"""

import logging
import math

import dspy
import pytest

from fermi_dspy import Fermi, answer_accuracy, answer_probability
from fermi_dspy.hygiene import REJECTION_REASONS, instruction_before_structure, rejection_reason
from fermi_dspy.metrics import normalize_metric_output
from fermi_dspy.programs import OpinionQA
from fermi_dspy.testing import LOGPROBS, rule_lm, shown_options
from tests.scripted import proposer_lm, task_lm, topic_examples

QUESTION = {"question": "How much do you trust the news?", "options": ["A lot", "Some", "Not at all"]}


def test_the_student_answers_with_an_option_and_the_lm_is_told_exactly_this_questions_letters():
    lm = rule_lm(lambda s, u: {"answer": "Some"})
    with dspy.context(lm=lm):
        prediction = OpinionQA()(**QUESTION)
    assert (prediction.answer, prediction.letter) == ("Some", "B")
    request = lm.engine.calls[-1]
    assert "Literal['A', 'B', 'C']" in request.user and shown_options(request.user) == QUESTION["options"]


def test_an_lm_that_answers_outside_the_options_never_yields_an_invalid_answer():
    lm = rule_lm(lambda s, u: {"answer": "Maybe"}, num_retries=0)
    with dspy.context(lm=lm), pytest.raises(Exception, match=r"Literal|letters|parse"):
        OpinionQA()(**QUESTION)
    assert len(lm.engine.calls) == 2  # the ChatAdapter's reply was refused, then DSPy's JSON fallback's too


def test_an_lm_that_answers_a_letter_beyond_the_options_is_refused():
    lm = rule_lm(lambda s, u: {"answer": "D"}, num_retries=0)
    with dspy.context(lm=lm), pytest.raises(Exception):  # noqa: B017 - any refusal; never an answer
        OpinionQA()(**QUESTION)


def test_the_system_message_does_not_change_with_the_number_of_options():
    lm = rule_lm(lambda s, u: {"answer": "Yes"})
    with dspy.context(lm=lm):
        OpinionQA()(question="Q1?", options=["Yes", "No"])
        OpinionQA()(question="Q2?", options=["Yes", "No", "Unsure", "Refused"])
    first, second = lm.engine.calls[-2:]
    assert first.system == second.system  # so a local engine keeps the prompt's prefix across questions
    assert "Literal['A', 'B', 'C', 'D']" in second.user


def test_option_probabilities_come_from_the_lms_logprobs():
    lm = rule_lm(lambda s, u: {"answer": "A lot", LOGPROBS: {"A": math.log(0.5), "B": math.log(0.3),
                                                             "C": math.log(0.1)}}, logprobs=True, top_logprobs=20)
    with dspy.context(lm=lm):
        prediction = OpinionQA()(**QUESTION)
    assert prediction.option_probs == pytest.approx([0.5, 0.3, 0.1])


def example(answer: str) -> dspy.Example:
    return dspy.Example(**QUESTION, answer=answer).with_inputs("question", "options")


def test_the_soft_metric_is_the_renormalized_probability_of_the_users_answer_and_aligned_means_top_choice():
    prediction = dspy.Prediction(answer="A lot", letter="A", option_probs=[0.5, 0.3, 0.1])
    right = normalize_metric_output(answer_probability(example("A lot"), prediction))
    wrong = normalize_metric_output(answer_probability(example("Some"), prediction))
    assert right.score == pytest.approx(0.5 / 0.9) and right.aligned is True
    assert wrong.score == pytest.approx(0.3 / 0.9) and wrong.aligned is False
    assert "probability 0.33" in wrong.feedback and "'A lot'" in wrong.feedback


def test_without_logprobs_the_soft_metric_falls_back_to_accuracy_with_one_warning(caplog):
    from fermi_dspy import metrics

    metrics._WARNED.clear()
    bare = dspy.Prediction(answer="Some", letter="B", option_probs=None)
    with caplog.at_level(logging.WARNING, logger="fermi_dspy.metrics"):
        scores = [normalize_metric_output(answer_probability(example(a), bare)).score
                  for a in ("Some", "A lot", "Some")]
    assert scores == [1.0, 0.0, 1.0]
    assert caplog.text.count("scoring 0/1 accuracy instead") == 1


def soft_task_lm():
    """Answers "No" always; but a prompt saying "supports <topic>" moves probability toward "Yes" without flipping."""

    def respond(system: str, user: str) -> dict:
        topic = user.rsplit("Do you support ", 1)[-1].split("?")[0]
        yes = 0.45 if f"supports {topic}" in system else 0.1
        return {"answer": "No", LOGPROBS: {"A": math.log(yes), "B": math.log(1 - yes)}}

    return rule_lm(respond, model="rule/soft")


def test_fermi_optimizes_the_soft_score_which_sees_what_accuracy_cannot():
    data = topic_examples(["guns", "taxes", "unions", "nukes", "zoos", "polls"], supported={"guns", "taxes", "unions"})
    compiled = {}
    for name, metric in (("accuracy", answer_accuracy), ("soft", answer_probability)):
        task = soft_task_lm()
        compiled[name] = Fermi(metric=metric, task_model=task, prompt_model=proposer_lm(), num_iterations=3,
                               num_candidates=2, display_progress=False, num_threads=1).compile(
            OpinionQA(), trainset=data, profile={"A": "b"})
        assert all(call.temperature == 0.0 for call in task.engine.calls)
    accuracy, soft = compiled["accuracy"].detailed_results, compiled["soft"].detailed_results
    # 0/1 accuracy sees no difference between prompts (the answer never flips) ...
    assert len({p.mean_score for p in accuracy.memory}) == 1
    # ... the soft score ranks the prompt naming the person's views first, and mis-alignment still means "the
    # model's top choice is not the person's" (every "Yes" example stays mis-aligned).
    assert "supports" in soft.memory[0].prompt and soft.memory[0].mean_score > soft.memory[-1].mean_score
    yes = [i for i, score in enumerate(soft.memory[0].scores) if score < 0.6 and soft.memory[0].aligned[i] is False]
    assert set(soft.memory[0].misaligned(1.0)) == set(yes)


def test_the_soft_metric_makes_fermi_ask_the_task_lm_for_logprobs():
    seen = []
    task = soft_task_lm()
    original = task.engine.complete

    def complete(request):
        seen.append(request.config.logprobs)
        return original(request)

    task.engine.complete = complete
    data = topic_examples(["guns", "taxes"], supported={"guns"})
    Fermi(metric=answer_probability, task_model=task, prompt_model=proposer_lm(), num_iterations=1,
          display_progress=False).compile(OpinionQA(), trainset=data + data, profile={"A": "b"})
    assert seen and all(value == 20 for value in seen)


# Real degenerate proposals from the local proposers, one per rule.
TRAINING = ["What type of leadership role should the U.S. play in the world? It should",
            "Which of the following would you say you prefer for getting news?",
            "Has the issue of made-up news and information led you to change the way you use social media?"]
TASK = "Answer the multiple-choice survey question with the letter of exactly one of its options."
DEGENERATE = {
    "meta_prompt_structure": [
        "E4. question: Which of the following would you say you prefer for getting news? options: A. Television | "
        "B. Radio The person's answer: Television",
        "Question 1: What type of leadership role should the US play in the world? It should Play a shared "
        "leadership role.\nPrompt 2: A person can be described",
        "B. Play a shared leadership role",
        "Example 6:\n<PROMPT>",
        TASK,
        # Kept by a cold main job (user 101224, 2026-12-01) before the rule took "out of" and label lists:
        "This person is described as a professional in the entertainment industry, played by a single world leader. "
        "Mis-aligned on 5 out of 8: shares E1, E2, E3, E4, E5 with the best prompt",
        # Kept by the 1.5B benchmark on the default panelists (user 112238, 2026-12-02, a2ab343): the signature's
        # own account of scoring, copied.
        "This person is a woman who has achieved having a fulfilling sex life goals. The model's answer matches the "
        "person's own answer, suggesting that she is very good at her view of life.",
    ],
    # Kept by the same run and user, tied with the profile prompt as the best (0.5 on 8 training answers).
    "unfinished": ["The person's actual views and values are:"],
    "training_question": [
        "What type of leadership role should the US play in the world? It should Play a shared leadership role.",
        # Kept by the same run (user 112238): a training question quoted with its answer, one word changed.
        "The person has it easier when it comes to achieving having a fulfilling sex life goals. Specifically, the "
        'question "Does the issue of made-up news and information led you to change the way you use social media? " '
        "is answered by the person's response \"No, have not done this.\"",
    ],
    "question": ["In the world, is there a place where people can play a shared leadership role without facing any "
                 "negative impact?"],
    "too_short": ["Answer plainly.", "{new_prompt}"],
    "empty": ["", "   "],
}


@pytest.mark.parametrize(("reason", "text"), [(r, t) for r, texts in DEGENERATE.items() for t in texts])
def test_every_rejection_rule_catches_its_real_degenerate_proposal(reason, text):
    assert rejection_reason(text, TRAINING, TASK) == reason


def test_real_instructions_pass():
    for text in ("This person's views reveal that they believe the entertainment industry has a positive effect "
                 "on the way things are going in the country these days.",
                 "A person can be described as follows:\n- Age: 65+\nAnswer every question exactly as this person "
                 "would."):
        assert rejection_reason(text, TRAINING, TASK) is None


def test_rejected_proposals_are_resampled_and_counted():
    proposals = iter(["E1. question: Do you support guns? The person's answer: Yes",
                      "Do you support guns?", "This person supports guns.", "This person supports taxes."] * 5)
    proposer = rule_lm(lambda s, u: {"new_prompt": next(proposals)}, model="rule/proposer")
    data = topic_examples(["guns", "taxes", "unions", "nukes", "zoos"], supported={"guns", "taxes"})
    result = Fermi(task_model=task_lm(), prompt_model=proposer, num_iterations=1, num_candidates=3, num_threads=1,
                   display_progress=False).compile(OpinionQA(), trainset=data, profile={"A": "b"}).detailed_results
    assert result.proposals_rejected == {"meta_prompt_structure": 1, "question": 1}
    assert [c.prompt for c in result.iterations[0].candidates][1:] == ["This person supports guns.",
                                                                       "This person supports taxes."]
    assert set(result.proposals_rejected) <= set(REJECTION_REASONS)


# An instruction followed by a copy of the meta-prompt's structure. The first is from the cold main job on user
# 101224 (above); the other two were written by the 0.5B proposer, on the real meta-prompt, for a synthetic profile
# and memory (a probe of proposer timing, 2026-12-01).
INSTRUCTION_THEN_COPY = {
    "This person is described as a professional in the entertainment industry, played by a single world leader. "
    "Mis-aligned on 5 out of 8: shares E1, E2, E3, E4, E5 with the best prompt":
        "This person is described as a professional in the entertainment industry, played by a single world leader.",
    "This person is a conservative Republican from the South who distrusts institutions.\nMis-aligned: E0. question: "
    "Do you think the government should do more to regulate banks?\nOptions: A. More B. Less C.":
        "This person is a conservative Republican from the South who distrusts institutions.",
    "This person is a conservative Republican from the South who distrusts institutions. Mis-aligned: E0. question: "
    "Do you think the government should do more to regulate banks? options: A. More B. Less C.":
        "This person is a conservative Republican from the South who distrusts institutions.",
}


# Constructed (review of the rule): the copy's label right after a full stop, on the same line or the next.
INSTRUCTION_THEN_COPY.update({
    "This person is a conservative Republican who distrusts institutions. E4. question: Do you trust banks?":
        "This person is a conservative Republican who distrusts institutions.",
    "This person is a conservative Republican. She distrusts all big institutions.\nE4. question: Who?":
        "This person is a conservative Republican. She distrusts all big institutions.",
    # An abbreviation is not a sentence's end: the sentence in which the copy began is dropped whole, not kept up to
    # its "U.S."
    "This person is a conservative Republican. She lives in the U.S. and trusts, as E4. question: Who?":
        "This person is a conservative Republican.",
})


@pytest.mark.parametrize("text", list(INSTRUCTION_THEN_COPY))
def test_the_instruction_written_before_a_copy_of_the_meta_prompt_is_what_remains(text):
    assert rejection_reason(text, TRAINING, TASK) == "meta_prompt_structure"
    assert instruction_before_structure(text) == INSTRUCTION_THEN_COPY[text]
    assert rejection_reason(INSTRUCTION_THEN_COPY[text], TRAINING, TASK) is None


def test_a_copy_with_no_whole_sentence_before_it_leaves_nothing():
    for text in DEGENERATE["meta_prompt_structure"][:4]:
        assert instruction_before_structure(text) == ""
    assert instruction_before_structure("This person, E4. question: Who?") == ""  # the copy began mid-sentence


def test_a_proposal_that_goes_on_to_copy_the_meta_prompt_keeps_its_instruction_without_a_new_sample():
    copy = "This person supports guns and unions.\nMis-aligned: E1. question: Do you support taxes? options: A. Yes"
    proposals = iter([copy, "Answer. E2. question: Who?", "This person supports taxes."] * 5)
    proposer = rule_lm(lambda s, u: {"new_prompt": next(proposals)}, model="rule/proposer")
    data = topic_examples(["guns", "taxes", "unions", "nukes", "zoos"], supported={"guns", "taxes"})
    program = Fermi(task_model=task_lm(), prompt_model=proposer, num_iterations=1, num_candidates=3, num_threads=1,
                    display_progress=False).compile(OpinionQA(), trainset=data, profile={"A": "b"})
    result = program.detailed_results
    assert [c.prompt for c in result.iterations[0].candidates][1:] == ["This person supports guns and unions.",
                                                                       "This person supports taxes."]
    # "Answer." is too short to stand alone: that proposal is rejected and re-sampled; the first is not re-sampled.
    assert result.proposals_rejected == {"meta_prompt_structure": 1}
    assert result.proposals_salvaged == 1 and result.iterations[0].proposals_salvaged == 1
    assert result.proposer_usage.calls == 3 and result.to_dict()["proposals_salvaged"] == 1


def test_a_kept_instruction_that_repeats_an_earlier_prompt_counts_as_a_duplicate_only():
    copy = "This person supports guns and unions.\nMis-aligned: E1. question: Do you support taxes? options: A. Yes"
    proposals = iter([copy, copy, "This person supports taxes."] * 5)
    proposer = rule_lm(lambda s, u: {"new_prompt": next(proposals)}, model="rule/proposer")
    data = topic_examples(["guns", "taxes", "unions", "nukes", "zoos"], supported={"guns", "taxes"})
    result = Fermi(task_model=task_lm(), prompt_model=proposer, num_iterations=1, num_candidates=3, num_threads=1,
                   display_progress=False).compile(OpinionQA(), trainset=data, profile={"A": "b"}).detailed_results
    assert [c.prompt for c in result.iterations[0].candidates][1:] == ["This person supports guns and unions.",
                                                                       "This person supports taxes."]
    assert result.proposals_rejected == {"duplicate": 1} and result.proposals_salvaged == 1
