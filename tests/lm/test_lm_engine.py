"""LlamaCppEngine through dspy.LM, with a fake llama.cpp model (offline, no weights)."""

import copy
import pickle
import sys
import threading
import time
from typing import Any, ClassVar, Literal

import dspy
import pytest

from fermi_dspy.lm import llama_engine
from fermi_dspy.lm.errors import EngineNotInstalledError
from fermi_dspy.lm.llama_engine import LlamaCppEngine


class FakeLlama:
    """Records create_chat_completion calls; fails if two run at once."""

    def __init__(self, reply: str = "[[ ## answer ## ]]\nB\n\n[[ ## completed ## ]]", finish: str = "stop"):
        self.reply = reply
        self.finish = finish
        self.calls: list[dict[str, Any]] = []
        self.resets = 0
        self.active = 0
        self.overlaps = 0

    def create_chat_completion(self, **kwargs: Any) -> dict[str, Any]:
        self.active += 1
        if self.active > 1:
            self.overlaps += 1
        time.sleep(0.005)
        self.calls.append(kwargs)
        self.active -= 1
        return {
            "id": "chatcmpl-fake",
            "choices": [{"message": {"role": "assistant", "content": self.reply}, "finish_reason": self.finish}],
            "usage": {"prompt_tokens": 123, "completion_tokens": 9, "total_tokens": 132},
        }

    def reset(self) -> None:
        self.resets += 1

    def close(self) -> None:
        pass


class FakeTemplatedLlama(FakeLlama):
    """A fake model with a chat template: the engine renders the prompt itself and calls create_completion."""

    metadata: ClassVar[dict[str, str]] = {
        "tokenizer.chat_template": "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}<a>"
    }

    class _Model:
        @staticmethod
        def token_get_text(token: int) -> str:
            return {0: "<eos>", 1: "<bos>"}[token]

    _model = _Model()

    def token_eos(self) -> int:
        return 0

    def token_bos(self) -> int:
        return 1

    def tokenize(self, text: bytes, add_bos: bool, special: bool) -> list[int]:
        self.prompt_text = text.decode()
        return list(text)

    def create_completion(self, **kwargs: Any) -> dict[str, Any]:
        out = self.create_chat_completion(**kwargs)
        choice = out["choices"][0]
        return {**out, "choices": [{"text": choice["message"]["content"], "finish_reason": choice["finish_reason"]}]}


@pytest.fixture
def engine(monkeypatch) -> LlamaCppEngine:
    eng = LlamaCppEngine("/nonexistent/model.gguf", max_tokens=64, temperature=0.0, seed=7)
    eng._llm = FakeLlama()
    monkeypatch.setattr(LlamaCppEngine, "_checked_grammar", lambda self, llm, text: text)
    return eng


def make_lm(engine: LlamaCppEngine, **kwargs: Any) -> dspy.LM:
    return dspy.LM("local/fake", engine=engine, cache=False, num_retries=0, **kwargs)


def test_chat_adapter_request_is_constrained_and_settings_reach_llama(engine):
    lm = make_lm(engine, temperature=0.4, max_tokens=33)
    with dspy.context(lm=lm):
        pred = dspy.Predict("question -> answer")(question="Pick A or B")
    assert pred.answer == "B"
    call = engine._llm.calls[-1]
    assert call["temperature"] == 0.4 and call["max_tokens"] == 33
    assert call["messages"][0]["role"] == "system" and call["messages"][-1]["role"] == "user"
    assert call["grammar"].startswith('root ::= "[[ ## answer ## ]]\\n"')
    assert lm.history[-1]["usage"]["prompt_tokens"] == 123
    assert lm.history[-1]["usage"]["completion_tokens"] == 9


def test_json_adapter_schema_becomes_a_json_grammar(engine):
    pytest.importorskip("llama_cpp")

    class Sig(dspy.Signature):
        question: str = dspy.InputField()
        answer: Literal["A", "B"] = dspy.OutputField()

    engine._llm.reply = '{"answer": "A"}'
    with dspy.context(lm=make_lm(engine), adapter=dspy.JSONAdapter()):
        pred = dspy.Predict(Sig)(question="?")
    assert pred.answer == "A"
    grammar = engine._llm.calls[-1]["grammar"]
    assert '"\\"A\\""' in grammar and "answer" in grammar  # the enum is in the grammar


def test_plain_calls_are_not_constrained(engine):
    engine._llm.reply = "hello there"
    assert make_lm(engine)("Say hello") == ["hello there"]
    assert engine._llm.calls[-1]["grammar"] is None


def test_defaults_and_explicit_seed(engine):
    lm = make_lm(engine)
    lm("one")
    lm("two")
    first, second = engine._llm.calls[-2:]
    assert first["temperature"] == 0.0 and first["max_tokens"] == 64  # engine defaults
    assert first["seed"] != second["seed"]  # a fresh sampling seed per call
    make_lm(engine, seed=42)("three")
    assert engine._llm.calls[-1]["seed"] == 42


def test_seed_sequence_is_reproducible():
    seeds = []
    for _ in range(2):
        eng = LlamaCppEngine("/x.gguf", seed=3)
        eng._llm = FakeLlama(reply="x")
        make_lm(eng)("a")
        make_lm(eng)("b")
        seeds.append([c["seed"] for c in eng._llm.calls])
    assert seeds[0] == seeds[1]


def test_prefix_cache_off_resets_before_every_call(engine):
    make_lm(engine)("a")
    assert engine._llm.resets == 0
    engine.prefix_cache = False
    make_lm(engine)("a")
    make_lm(engine)("b")
    assert engine._llm.resets == 2


def test_length_finish_reason_is_reported(engine):
    engine._llm.finish = "length"
    engine._llm.reply = "[[ ## answer ## ]]\nB"
    with dspy.context(lm=make_lm(engine)):
        assert dspy.Predict("question -> answer")(question="?").answer == "B"


def test_context_overflow_is_a_clear_error(engine):
    def overflow(**kwargs):
        raise ValueError("Requested tokens (5000) exceed context window of 4096")

    engine._llm.create_chat_completion = overflow
    with pytest.raises(Exception, match="n_ctx"):
        make_lm(engine)("a very long prompt")


def test_calls_from_threads_are_serialized(engine):
    lm = make_lm(engine)
    program = dspy.Predict("question -> answer")
    examples = [dspy.Example(question=f"q{i}").with_inputs("question") for i in range(16)]
    with dspy.context(lm=lm):
        results = dspy.Parallel(num_threads=8, disable_progress_bar=True)([(program, ex) for ex in examples])
    assert len(results) == 16 and all(r.answer == "B" for r in results)
    assert engine._llm.overlaps == 0 and len(engine._llm.calls) == 16


def test_lm_copies_share_the_engine_and_pickles_drop_the_model(engine):
    lm = make_lm(engine)
    assert lm.copy(temperature=0.9, rollout_id=3)._engine_spec is engine
    assert copy.deepcopy(engine) is engine
    clone = pickle.loads(pickle.dumps(engine))
    assert clone._llm is None and clone.model_path == engine.model_path and clone.max_tokens == 64
    assert isinstance(clone._lock, type(threading.Lock()))


def test_dump_and_load_state_round_trip(engine):
    state = engine.dump_state()
    assert state["model_path"] == "/nonexistent/model.gguf" and "_llm" not in state
    rebuilt = LlamaCppEngine.load_state(state)
    assert rebuilt.dump_state() == state


def test_missing_model_file_is_a_clear_error():
    pytest.importorskip("llama_cpp")
    with pytest.raises(Exception, match="does not exist"):
        make_lm(LlamaCppEngine("/nonexistent/model.gguf"))("hi")


def test_missing_llama_cpp_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` raise ImportError
    with pytest.raises(EngineNotInstalledError, match=r"pip install 'fermi-dspy\[local\]'"):
        llama_engine.import_llama_cpp()


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="n_ctx"):
        LlamaCppEngine("/x.gguf", n_ctx=10)


def test_streaming_is_not_supported(engine):
    with pytest.raises(NotImplementedError):
        engine.stream(None)


def test_chat_template_path_prefills_the_first_header(engine):
    pytest.importorskip("llama_cpp")
    engine._llm = FakeTemplatedLlama(reply="B\n\n")
    lm = make_lm(engine)
    with dspy.context(lm=lm):
        pred = dspy.Predict("question -> answer")(question="Pick A or B")
    assert pred.answer == "B"
    assert engine._llm.prompt_text.endswith("<a>[[ ## answer ## ]]\n")  # header evaluated as prompt
    assert "Respond with the corresponding output fields" not in engine._llm.prompt_text  # redundant reminder dropped
    call = engine._llm.calls[-1]
    assert call["grammar"] is None and {"\n\n", "[["} <= set(call["stop"])  # one str field: stop strings, no grammar
    assert "<eos>" in call["stop"] and call["stopping_criteria"] is not None
    assert lm.history[-1]["outputs"][0] == "[[ ## answer ## ]]\nB\n\n[[ ## completed ## ]]"


def test_chat_template_path_uses_the_grammar_for_typed_or_several_fields(engine):
    pytest.importorskip("llama_cpp")
    engine._llm = FakeTemplatedLlama(reply="3\n\n")
    with dspy.context(lm=make_lm(engine)):
        assert dspy.Predict("question -> answer: int")(question="1+2?").answer == 3
    assert engine._llm.calls[-1]["grammar"].startswith('root ::= v0 "\\n\\n"')  # generation starts at the value
    engine.fast_text = False
    engine._llm.reply = "B\n\n"
    with dspy.context(lm=make_lm(engine)):
        assert dspy.Predict("question -> answer")(question="?").answer == "B"
    assert engine._llm.calls[-1]["grammar"] is not None and "[[" not in engine._llm.calls[-1]["stop"]


def test_empty_unconstrained_reply_is_generated_again_under_the_grammar(engine):
    pytest.importorskip("llama_cpp")

    class EmptyThenB(FakeTemplatedLlama):
        def create_completion(self, **kwargs: Any) -> dict[str, Any]:
            self.reply = "\n" if kwargs["grammar"] is None else "B\n\n"
            return super().create_completion(**kwargs)

    engine._llm = EmptyThenB()
    lm = make_lm(engine)
    with dspy.context(lm=lm):
        assert dspy.Predict("question -> answer")(question="?").answer == "B"
    assert [call["grammar"] is None for call in engine._llm.calls] == [True, False]
    usage = lm.history[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (246, 18)  # both attempts are counted


def test_chat_template_path_truncated_reply_gets_no_completion_marker(engine):
    pytest.importorskip("llama_cpp")
    engine._llm = FakeTemplatedLlama(reply="B and then some", finish="length")
    lm = make_lm(engine)
    with dspy.context(lm=lm):
        assert dspy.Predict("question -> answer")(question="?").answer == "B and then some"
    assert lm.history[-1]["outputs"][0] == "[[ ## answer ## ]]\nB and then some"


def test_async_calls_use_the_same_engine(engine):
    import asyncio

    from fermi_dspy.lm.llama_engine import AsyncLlamaCppEngine

    lm = dspy.LM("local/fake", engine=engine, async_engine=AsyncLlamaCppEngine(engine), cache=False, num_retries=0)

    async def main():
        with dspy.context(lm=lm):
            return await dspy.Predict("question -> answer").acall(question="?")

    assert asyncio.run(main()).answer == "B"
    assert len(engine._llm.calls) == 1
