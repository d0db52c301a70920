"""Overhead measurement with the instant LM, the single-best-prompt copy of a Fermi program, and the scripted LMs."""

import dspy

from fermi_dspy import Fermi
from fermi_dspy.programs import OpinionQA
from fermi_dspy.testing import NewTexts, answer_any, instant_lm, output_fields
from programs.benchmark.methods.fermi_methods import with_selection
from programs.benchmark.overhead import instant_compile, measure_overhead
from tests.benchmark.conftest import OPTIONS


def examples(n):
    return [dspy.Example(question=f"Statement {i}?", options=OPTIONS, answer=OPTIONS[i % 3])
            .with_inputs("question", "options") for i in range(n)]


def test_instant_compile_counts_evaluations_and_time(small_settings):
    from programs.benchmark.users import benchmark_users

    user = benchmark_users(small_settings).users[0]
    compiled = instant_compile(user, num_iterations=2, num_candidates=2, memory_size=3)
    assert compiled.evaluations == 4 * 5 and compiled.proposer_calls == 3 and compiled.candidates == 4
    assert 0 < compiled.lm_seconds < compiled.seconds
    assert compiled.outside_lm_per_evaluation > 0


def test_overhead_without_a_real_run_reports_per_evaluation_times(small_settings):
    measurement = measure_overhead(small_settings, users=1, repeats=1)
    per = measurement["per_evaluation_ms"]
    assert per["outside_lm"] > 0 and per["dspy_predict_floor_outside_lm"] > 0
    assert "real_compile" not in measurement


def test_single_best_copy_keeps_the_prompts_and_changes_only_the_selection():
    program = Fermi(prompt_model=instant_lm("proposer"), task_model=instant_lm(), num_iterations=2, num_candidates=2,
                    display_progress=False).compile(OpinionQA(), trainset=examples(8), profile={"Party": "X"})
    best = with_selection(program, OpinionQA(), "best")
    assert best.prompts == program.prompts and best.selection == "best" and program.selection == "retrieval"
    assert {best.route(question=f"Statement {i}?", options=OPTIONS) for i in range(8)} == {0}


def test_scripted_lms_answer_any_signature():
    system = "Your output fields are:\n1. `proposed_instruction` (str): x\n2. `ok` (bool): y\nAll interactions ..."
    assert output_fields(system) == [("proposed_instruction", "str"), ("ok", "bool")]
    respond = NewTexts()
    first, second = respond(system, ""), respond(system, "")
    assert first["ok"] is False and first["proposed_instruction"] != second["proposed_instruction"]
    user = '[[ ## question ## ]]\nQ?\n\n[[ ## options ## ]]\n["a", "b"]\n\n'
    assert answer_any("Your output fields are:\n1. `answer` (str):\nAll interactions", user)["answer"] in {"a", "b"}
