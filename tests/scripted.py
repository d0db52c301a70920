"""The tests' scripted world: SYNTHETIC topic questions (not real data) and LMs whose answers depend on the prompt,
so that optimization can measurably help. Every scripted LM of the tests is built from these rules on
`fermi_dspy.testing` (the run tests' engine, `tests.runs.lms`, adds knobs for crashes, delays and call logs).

Task rule: to "Do you support <topic>?" (optionally tagged with its user, "[u3] Do you support guns?") the task LM
answers "Yes" only when its instruction says "supports <topic>", otherwise "No".
Proposer rule: it writes "This person supports a, b." naming every topic it can see in the mis-aligned examples that
the person answered "Yes" to, plus those the best earlier prompt already names. Without mis-aligned examples (OPRO
view) it can only rephrase. Each proposal carries a draft mark, from a counter here or from the request's seed in the
run tests (so that a user's proposals there do not depend on other users).
"""

import itertools
import re

import dspy

from fermi_dspy.testing import rule_lm

QUESTION = re.compile(r"(?:\[(u\d+)\] )?Do you support (\w+)\?")


def topic_examples(topics, supported):
    return [
        dspy.Example(question=f"Do you support {t}?", options=["Yes", "No"], answer="Yes" if t in supported else "No")
        .with_inputs("question", "options")
        for t in topics
    ]


def task_respond(system: str, user: str) -> dict:
    match = QUESTION.search(user)
    topic = match.group(2) if match else ""
    return {"answer": "Yes" if topic and re.search(rf"supports\b[^.]*\b{topic}\b", system) else "No"}


def proposal(user: str, draft: object) -> dict:
    """The proposer rule's reply to a request whose conversation is `user`."""
    memory = user.split("[[ ## scored_prompts ## ]]", 1)[-1]
    topics = set()
    for block in memory.split("\n\n"):
        match = QUESTION.search(block)
        if match and "The person's answer: Yes" in block:
            topics.add(match.group(2))
    for claim in re.findall(r"This person supports ([\w, ]+)\.", memory):
        topics.update(t.strip() for t in claim.split(",") if t.strip())
    if not topics:
        return {"new_prompt": f"Variation {draft}: answer thoughtfully."}
    return {"new_prompt": f"This person supports {', '.join(sorted(topics))}. (draft {draft})"}


def make_proposer_respond():
    counter = itertools.count()
    return lambda system, user: proposal(user, next(counter))


def task_lm(**kwargs):
    return rule_lm(task_respond, model="rule/task", **kwargs)


def proposer_lm(**kwargs):
    return rule_lm(make_proposer_respond(), model="rule/proposer", **kwargs)
