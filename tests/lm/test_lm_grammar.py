"""Grammar construction from DSPy ChatAdapter / JSONAdapter requests (pure Python, no model)."""

from typing import Literal

import dspy
import pytest

from fermi_dspy.lm.grammar import OutputField, chat_adapter_fields, chat_adapter_gbnf, json_schema_of


class Mixed(dspy.Signature):
    """Answer."""

    question: str = dspy.InputField()
    reasoning: str = dspy.OutputField()
    answer: Literal["A", "B", "It's C"] = dspy.OutputField()
    count: int = dspy.OutputField()
    sure: bool = dspy.OutputField()
    tags: list[str] = dspy.OutputField()


def last_user_text(adapter: dspy.Adapter, signature: type[dspy.Signature]) -> str:
    messages = adapter.format(signature, demos=[], inputs={"question": "Which one? Respond with A or B."})
    return messages[-1]["content"]


def test_fields_are_read_from_a_real_chat_adapter_request():
    fields = chat_adapter_fields(last_user_text(dspy.ChatAdapter(), Mixed))
    assert fields == [
        OutputField("reasoning", None),
        OutputField("answer", "Literal['A', 'B', \"It's C\"]"),
        OutputField("count", "int"),
        OutputField("sure", "bool"),
        OutputField("tags", "list[str]"),
    ]


def test_a_single_str_field():
    sig = dspy.Signature("question -> answer")
    assert chat_adapter_fields(last_user_text(dspy.ChatAdapter(), sig)) == [OutputField("answer", None)]


def test_json_adapter_and_plain_prompts_are_not_chat_requests():
    assert chat_adapter_fields(last_user_text(dspy.JSONAdapter(), Mixed)) is None
    assert chat_adapter_fields("hello") is None


def test_grammar_orders_sections_and_constrains_typed_values():
    fields = chat_adapter_fields(last_user_text(dspy.ChatAdapter(), Mixed))
    gbnf = chat_adapter_gbnf(fields)
    root = gbnf.splitlines()[0]
    order = ["reasoning", "answer", "count", "sure", "tags", "completed"]
    positions = [root.index(f"[[ ## {name} ## ]]") for name in order]
    assert positions == sorted(positions)
    assert 'v1 ::= "A" | "B" | "It\'s C"' in gbnf
    assert "v0 ::= text" in gbnf and "v2 ::= int" in gbnf and "v3 ::= bool" in gbnf and "v4 ::= data" in gbnf


@pytest.mark.parametrize("mode", ["line", "paragraph", "free"])
def test_text_modes(mode):
    assert "text ::=" in chat_adapter_gbnf([OutputField("answer")], mode)


def test_bad_text_mode_and_empty_fields():
    with pytest.raises(ValueError, match="text_mode"):
        chat_adapter_gbnf([OutputField("answer")], "essay")
    with pytest.raises(ValueError, match="at least one"):
        chat_adapter_gbnf([])


def test_response_formats():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    assert json_schema_of(None) == (False, None)
    assert json_schema_of({"type": "text"}) == (False, None)
    assert json_schema_of({"type": "json_object"}) == (True, None)
    assert json_schema_of({"type": "json_schema", "schema": schema, "name": "x"}) == (True, schema)
    assert json_schema_of({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}) == (True, schema)
    with pytest.raises(ValueError, match="Unsupported response_format"):
        json_schema_of({"type": "xml"})


def test_format_reminder_is_dropped_only_at_the_end_of_a_chat_adapter_message():
    from fermi_dspy.lm.grammar import without_format_reminder

    signature = dspy.Signature("question -> answer: int")
    text = dspy.ChatAdapter().format(signature, demos=[], inputs={"question": "2+2?"})[-1]["content"]
    assert "Respond with the corresponding output fields" in text
    assert without_format_reminder(text) == "[[ ## question ## ]]\n2+2?"
    assert without_format_reminder("no reminder here") == "no reminder here"
    quoted = text + "\n\nand then more text"  # the sentence is not the message's end: left alone
    assert without_format_reminder(quoted) == quoted
