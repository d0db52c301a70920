"""Compiling and running user A never sends user B's data to an LM, nor stores it in A's program."""

import dspy

from fermi_dspy import Fermi, PersonalizedProgram
from fermi_dspy.programs import OpinionQA
from fermi_dspy.testing import rule_lm
from tests.scripted import make_proposer_respond, task_respond, topic_examples

CANARY = "CANARY-7f3a9c-user-B"


def both_roles_lm():
    """One scripted LM serving as task and proposer LM (as with a single configured LM)."""
    propose = make_proposer_respond()
    return rule_lm(lambda s, u: propose(s, u) if "new_prompt" in s else task_respond(s, u))


def test_other_users_data_never_reaches_an_lm_or_the_saved_program(tmp_path):
    user_a = {"profile": {"Party": "Democrat"}, "examples": topic_examples(["guns", "taxes", "zoos", "polls"] * 2,
                                                                          supported={"guns"})}
    user_b = {"profile": {"Party": CANARY}, "examples": topic_examples([f"{CANARY}x", "taxes", "unions"] * 2,
                                                                       supported={"taxes"})}
    optimizer = Fermi(num_iterations=3, num_candidates=3, num_threads=2, display_progress=False)

    # B is compiled first, in the same process, by the same optimizer object.
    lm_b = both_roles_lm()
    with dspy.context(lm=lm_b):
        optimizer.compile(OpinionQA(), trainset=user_b["examples"], profile=user_b["profile"])
    assert any(CANARY in call.text for call in lm_b.engine.calls)  # the canary really was planted

    lm_a = both_roles_lm()
    with dspy.context(lm=lm_a):
        program_a = optimizer.compile(OpinionQA(), trainset=user_a["examples"], profile=user_a["profile"])
        path = tmp_path / "a.json"
        program_a.save(str(path))
        loaded = PersonalizedProgram(OpinionQA())
        loaded.load(str(path))
        for example in user_a["examples"]:
            loaded(**example.inputs())

    assert lm_a.engine.calls and all(CANARY not in call.text for call in lm_a.engine.calls)
    assert CANARY not in path.read_text()
    assert CANARY not in repr(program_a.detailed_results.to_dict())
    assert CANARY not in repr(optimizer.get_params())
    # user A's own data did reach the LM, so the checks above are not vacuous
    assert any("Democrat" in call.text for call in lm_a.engine.calls)
