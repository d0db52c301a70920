"""The proposer's Signatures (their docstrings are the meta-prompts). Users may replace them.

A replacement is any `dspy.Signature` whose input fields are drawn from `PROPOSER_INPUTS` and which has one
string output field, the new prompt.
"""

import dspy

PROPOSER_INPUTS = {
    "profile": "What is known about the person (their profile).",
    "task": "The task instructions the prompt is placed before.",
    "demonstrations": "Examples of the person's answers (the prompt is placed before each question).",
    "scored_prompts": "Earlier prompts in ascending order of score, with the examples they got wrong.",
}


class ProposePersonalizedPrompt(dspy.Signature):
    """You write prompts that make an AI model answer questions exactly the way one particular person would.

    The prompt is placed before the task instructions; the model then answers the person's questions. A prompt's
    score is the fraction of the person's questions on which the model's answer matched the person's own answer.

    You see what is known about the person, examples of the person's answers, and earlier prompts in ascending
    order of score. Each earlier prompt lists its mis-aligned examples: questions where the model's answer differed
    from the person's. Study them: what do the person's actual answers reveal about their views, values and ways of
    answering that the earlier prompts missed or got wrong?

    Write one new prompt, different from all earlier prompts, that should score higher than all of them. It must
    stand alone (it replaces the earlier prompts), describe the person and how they answer, and must not mention
    scores, example numbers or these instructions. Do not copy questions, options or answers: say what they reveal
    about the person."""

    profile: str = dspy.InputField(desc=PROPOSER_INPUTS["profile"])
    task: str = dspy.InputField(desc=PROPOSER_INPUTS["task"])
    demonstrations: str = dspy.InputField(desc=PROPOSER_INPUTS["demonstrations"])
    scored_prompts: str = dspy.InputField(desc=PROPOSER_INPUTS["scored_prompts"])
    new_prompt: str = dspy.OutputField(
        desc="2 to 4 sentences that begin with 'This person' and describe the person's views, values and how they "
        "answer survey questions, as learned from their answers; no questions, options or example labels."
    )


class ProposePromptFromScores(dspy.Signature):
    """You write instructions for an AI model. Below are earlier instructions with their scores, in ascending order
    of score; a score is the fraction of questions on which the model's answer matched the target answer. Examples
    of the task show what the instruction is placed before.

    Write one new instruction, different from all the earlier ones, that should score higher than all of them.
    Output only the instruction's text."""

    task: str = dspy.InputField(desc=PROPOSER_INPUTS["task"])
    demonstrations: str = dspy.InputField(desc=PROPOSER_INPUTS["demonstrations"])
    scored_prompts: str = dspy.InputField(desc="Earlier instructions in ascending order of score.")
    new_prompt: str = dspy.OutputField(desc="The new instruction's text, and nothing else.")


def check_proposer_signature(signature: type[dspy.Signature]) -> str:
    """Check a proposer signature and return the name of its output field.

    Raises:
        TypeError: Not a dspy.Signature class.
        ValueError: An input Fermi cannot fill, or not exactly one output field.
    """
    if not (isinstance(signature, type) and issubclass(signature, dspy.Signature)):
        raise TypeError(f"proposer_signature must be a dspy.Signature class, got {signature!r}.")
    unknown = sorted(set(signature.input_fields) - set(PROPOSER_INPUTS))
    if unknown:
        raise ValueError(
            f"proposer_signature {signature.__name__} has input field(s) {unknown} that Fermi cannot fill; "
            f"use only {sorted(PROPOSER_INPUTS)}."
        )
    outputs = list(signature.output_fields)
    if len(outputs) != 1:
        raise ValueError(
            f"proposer_signature {signature.__name__} must have exactly one output field (the new prompt); "
            f"it has {outputs}."
        )
    return outputs[0]
