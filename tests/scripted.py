"""Scripted LMs whose answers depend on the prompt, so that optimization can measurably help (synthetic, not real).

Task rule: to "Do you support <topic>?" the task LM answers "Yes" only when its instruction says
"supports <topic>", otherwise "No".
Proposer rule: it writes "This person supports a, b." naming every topic it can see in the mis-aligned examples that
the person answered "Yes" to, plus those the best earlier prompt already names. Without mis-aligned examples (OPRO
view) it can only rephrase.
"""

import itertools
import re

import dspy

from fermi_dspy.testing import rule_lm

QUESTION = re.compile(r"Do you support (\w+)\?")


def topic_examples(topics, supported):
    return [
        dspy.Example(question=f"Do you support {t}?", options=["Yes", "No"], answer="Yes" if t in supported else "No")
        .with_inputs("question", "options")
        for t in topics
    ]


def task_respond(system: str, user: str) -> dict:
    match = QUESTION.search(user)
    topic = match.group(1) if match else ""
    return {"answer": "Yes" if re.search(rf"supports\b[^.]*\b{topic}\b", system) else "No"}


def make_proposer_respond():
    counter = itertools.count()

    def respond(system: str, user: str) -> dict:
        number = next(counter)
        memory = user.split("[[ ## scored_prompts ## ]]", 1)[-1]
        topics = set()
        for block in memory.split("\n\n"):
            match = QUESTION.search(block)
            if match and "The person's answer: Yes" in block:
                topics.add(match.group(1))
        for claim in re.findall(r"This person supports ([\w, ]+)\.", memory):
            topics.update(t.strip() for t in claim.split(",") if t.strip())
        if not topics:
            return {"new_prompt": f"Variation {number}: answer thoughtfully."}
        return {"new_prompt": f"This person supports {', '.join(sorted(topics))}. (draft {number})"}

    return respond


def task_lm(**kwargs):
    return rule_lm(task_respond, model="rule/task", **kwargs)


def proposer_lm(**kwargs):
    return rule_lm(make_proposer_respond(), model="rule/proposer", **kwargs)
