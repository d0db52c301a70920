"""LlamaCppEngine through dspy.LM, with a fake llama.cpp model (offline, no weights)."""

import copy
import ctypes
import pickle
import sys
import threading
import time
from typing import Any, ClassVar, Literal

import dspy
import pytest

from fermi_dspy.lm import llama_engine
from fermi_dspy.lm.errors import EngineNotInstalledError
from fermi_dspy.lm.llama_engine import LlamaCppEngine, LoopStoppingEngine


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
        return list(text)

    def create_completion(self, **kwargs: Any) -> dict[str, Any]:
        self.prompt_text = bytes(kwargs["prompt"]).decode()
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
    # the prompt is counted once; both attempts' generated tokens are counted
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (len(engine._llm.prompt_text), 18)


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


class FakeKVLlama(FakeTemplatedLlama):
    """A templated fake with a KV cache (input_ids, n_tokens) and next-token logits, like llama.cpp's `Llama`.

    Tokens are bytes; `eval` records what it evaluated; the logits favour `favourite` (a byte).
    """

    def __init__(self, favourite: str = "B", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        import numpy as np

        self.input_ids = np.zeros(10_000, dtype=np.intc)
        self.n_tokens = 0
        self.evaluated: list[int] = []
        self.favourite = favourite
        self._logits = (ctypes.c_float * 256)()
        fake = self

        class Ctx:
            def kv_cache_seq_rm(self, seq: int, start: int, end: int) -> bool:
                return True

            def get_logits(self) -> Any:
                for i in range(256):
                    fake._logits[i] = 0.0
                fake._logits[ord(fake.favourite)] = 3.0
                fake._logits[ord("A")] = 1.0
                return ctypes.cast(fake._logits, ctypes.POINTER(ctypes.c_float))

        self._ctx = Ctx()

    def n_vocab(self) -> int:
        return 256

    def eval(self, tokens: list[int]) -> None:
        self.input_ids[self.n_tokens : self.n_tokens + len(tokens)] = tokens
        self.n_tokens += len(tokens)
        self.evaluated.append(len(tokens))

    def create_completion(self, **kwargs: Any) -> dict[str, Any]:
        prompt = list(kwargs["prompt"])
        held = list(self.input_ids[: self.n_tokens])
        common = 0
        while common < min(len(held), len(prompt)) and held[common] == prompt[common]:
            common += 1
        self.n_tokens = min(common, len(prompt) - 1)
        self.eval(prompt[self.n_tokens :])
        return super().create_completion(**kwargs)


class Choice(dspy.Signature):
    """Pick one."""

    question: str = dspy.InputField()
    answer: Literal["A", "B", "C"] = dspy.OutputField()


def test_a_single_token_choice_is_answered_from_one_forward_pass_with_logprobs(engine):
    pytest.importorskip("llama_cpp")
    engine._llm = fake = FakeKVLlama(favourite="C")
    lm = make_lm(engine, logprobs=True, top_logprobs=5)
    with dspy.context(lm=lm):
        pred = dspy.Predict(Choice)(question="Pick")
    assert pred.answer == "C"
    assert fake.calls == []  # nothing generated: no completion call at all
    top = pred.logprobs["content"][0]["top_logprobs"]
    assert [t["token"] for t in top] == ["C", "A", "B"] and top[0]["logprob"] > top[1]["logprob"]
    assert sum(__import__("math").exp(t["logprob"]) for t in top) < 1.0  # true probabilities, not renormalized
    usage = lm.history[-1]["usage"]
    assert usage["completion_tokens"] == 0 and usage["prompt_tokens"] == fake.n_tokens


def test_a_choice_at_temperature_zero_is_deterministic_and_sampling_stays_among_the_choices(engine):
    pytest.importorskip("llama_cpp")
    engine._llm = FakeKVLlama(favourite="B")
    with dspy.context(lm=make_lm(engine)):
        assert {dspy.Predict(Choice)(question=f"q{i}").answer for i in range(3)} == {"B"}
    with dspy.context(lm=make_lm(engine, temperature=2.0)):
        answers = {dspy.Predict(Choice)(question=f"q{i}").answer for i in range(30)}
    assert answers <= {"A", "B", "C"} and len(answers) > 1


def test_consecutive_calls_reuse_the_cached_prefix_and_report_it(engine):
    pytest.importorskip("llama_cpp")
    engine._llm = fake = FakeKVLlama()
    lm = make_lm(engine)
    with dspy.context(lm=lm):
        dspy.Predict(Choice)(question="first question")
        dspy.Predict(Choice)(question="second question")
    first, second = (entry["usage"] for entry in lm.history[-2:])
    assert first["prompt_tokens_details"]["cached_tokens"] == 0
    cached = second["prompt_tokens_details"]["cached_tokens"]
    assert cached > 0.8 * second["prompt_tokens"] and fake.evaluated[-1] == second["prompt_tokens"] - cached


def test_alternating_prompt_families_keep_their_own_kv_slot(engine, monkeypatch):
    pytest.importorskip("llama_cpp")
    engine._llm = FakeKVLlama()
    monkeypatch.setattr(engine, "_create_llama", lambda: FakeKVLlama())
    stats: list[Any] = []
    engine.add_listener(stats.append)
    task, proposer = dspy.Predict(Choice), dspy.Predict("profile, memory -> new_prompt")
    with dspy.context(lm=make_lm(engine)):
        for i in range(2):
            task(question=f"question {i}")
            proposer(profile="a person", memory=f"memory {i}")
            task(question=f"question {i} again")
    assert [s.slot for s in stats] == [0, 1, 0, 0, 1, 0]
    # after the first call of each family, every call reuses most of its prompt
    assert all(s.cached_tokens > 0.5 * s.prompt_tokens for s in stats[2:])
    assert len(engine._slots) == 2


def test_with_one_slot_alternating_families_re_evaluate_their_prefix(engine):
    pytest.importorskip("llama_cpp")
    engine.slots = 1
    engine._llm = FakeKVLlama()
    stats: list[Any] = []
    engine.add_listener(stats.append)
    task, proposer = dspy.Predict(Choice), dspy.Predict("profile, memory -> new_prompt")
    with dspy.context(lm=make_lm(engine)):
        task(question="question 1")
        proposer(profile="a person", memory="memory")
        task(question="question 2")
    assert {s.slot for s in stats} == {0}
    assert stats[-1].cached_tokens < 0.2 * stats[-1].prompt_tokens


class FakeGeneratingLlama(FakeTemplatedLlama):
    """Generates its reply one token (byte) at a time and asks the stopping criteria after each, as llama.cpp does."""

    def detokenize(self, tokens: list[int]) -> bytes:
        return bytes(tokens)

    def create_completion(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        prompt, generated = list(kwargs["prompt"]), []
        criteria = kwargs["stopping_criteria"]
        finish = "length"
        for token in self.reply.encode()[: kwargs["max_tokens"]]:
            if criteria is not None and criteria(prompt + generated, None):
                finish = "stop"
                break
            generated.append(token)
        else:
            finish = "stop" if len(self.reply.encode()) <= kwargs["max_tokens"] else "length"
        return {"choices": [{"text": bytes(generated).decode(), "finish_reason": finish}],
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(generated)}}


# The 0.5B proposer's loop on a real panelist (cold `fermi-dspy run`, 2026-12-01), as in tests/test_proposal.py.
LOOP = ("In South, high school graduate, white person, 65+, not married, conservative, not selected, not selected, "
        "Republican, less than $30,000, conservative, not selected, Republican, not selected, less than $30,000, "
        "conservative, not selected, Republican, not selected, less than $30,000, conservative, not selected, ")


def test_a_free_text_reply_stops_where_it_starts_to_loop_and_gives_the_same_proposal(engine):
    pytest.importorskip("llama_cpp")
    from fermi_dspy.proposal import clean_proposal

    engine._llm = FakeGeneratingLlama(reply=LOOP * 3)
    engine.max_tokens = 4096
    proposer = make_lm(LoopStoppingEngine(engine))
    with dspy.context(lm=proposer):
        stopped = dspy.Predict("question -> answer")(question="Describe the person.").answer
    assert proposer.history[-1]["usage"]["completion_tokens"] < len(LOOP)  # within the first round, not 4096 tokens
    assert clean_proposal(stopped, max_chars=1500) == clean_proposal(LOOP * 3, max_chars=1500)

    task = make_lm(engine)  # the same engine without the loop stop (its default): a task reply is never cut
    with dspy.context(lm=task):
        assert dspy.Predict("question -> answer")(question="Describe the person.").answer == (LOOP * 3).strip()


def test_a_word_still_being_generated_does_not_make_a_loop(engine):
    pytest.importorskip("llama_cpp")
    text = "She would rather pay less than most. She would rather pay less thanks to her savings."  # "than" grows
    engine._llm = FakeGeneratingLlama(reply=text + "\n\n")
    engine.max_tokens = 4096
    with dspy.context(lm=make_lm(LoopStoppingEngine(engine))):
        assert dspy.Predict("question -> answer")(question="?").answer == text
    assert len(engine._llm.calls) == 1


def test_the_loop_stop_judges_only_the_generated_text_not_a_prompt_that_repeats_itself(engine):
    pytest.importorskip("llama_cpp")
    text = "This person answers as a Republican would about guns, and as a Republican would about taxes."
    engine._llm = FakeGeneratingLlama(reply=text + "\n\n")
    engine.max_tokens = 4096
    boilerplate = "Answer every question as this person would. " * 3  # a repeated run in the prompt only
    with dspy.context(lm=make_lm(LoopStoppingEngine(engine))):
        assert dspy.Predict("question -> answer")(question=boilerplate).answer == text
    assert len(engine._llm.calls) == 1  # generated whole at once, not stopped at once and generated again


def test_the_loop_stopping_engine_shares_the_engine_and_saves_and_loads():
    base = LlamaCppEngine("/nonexistent/model.gguf", max_tokens=64)
    view = LoopStoppingEngine(base, 5)
    assert view.model_path == base.model_path and copy.deepcopy(view) is view
    loaded = LoopStoppingEngine.load_state(view.dump_state())
    assert loaded.words == 5 and loaded.engine.max_tokens == 64 and loaded.engine.stop_loops is None
    with pytest.raises(ValueError, match="at least 2"):
        LoopStoppingEngine(base, 1)


def test_a_reply_without_a_loop_is_generated_whole(engine):
    pytest.importorskip("llama_cpp")
    text = "This person answers as a Republican would about guns, and as a Republican would about taxes."
    engine._llm = FakeGeneratingLlama(reply=text + "\n\n")
    engine.max_tokens = 4096
    with dspy.context(lm=make_lm(LoopStoppingEngine(engine))):
        assert dspy.Predict("question -> answer")(question="?").answer == text


def test_stop_loops_must_be_a_run_of_at_least_two_words():
    with pytest.raises(ValueError, match="stop_loops"):
        LlamaCppEngine("/nonexistent/model.gguf", stop_loops=1)


@pytest.mark.parametrize("view", [False, True], ids=["task", "proposer"])
def test_an_lm_on_the_local_engine_saves_and_loads_with_one_shared_engine(view):
    import json

    from fermi_dspy.lm.llama_engine import AsyncLlamaCppEngine

    base = LlamaCppEngine("/nonexistent/model.gguf", max_tokens=48)
    engine = LoopStoppingEngine(base) if view else base
    lm = dspy.LM("local/fake", engine=engine, async_engine=AsyncLlamaCppEngine(engine), cache=False, num_retries=0)
    state = json.loads(json.dumps(lm.dump_state()))
    loaded = dspy.LM.load_state(state, allow_custom_lm_class=True)
    sync, asynchronous = loaded._engine_spec, loaded._async_engine_spec.engine
    assert type(sync) is type(engine) and type(asynchronous) is type(engine)
    core = (lambda e: e.engine) if view else (lambda e: e)
    assert core(sync) is core(asynchronous)  # one model, one lock, one set of KV slots
    assert core(sync).max_tokens == 48
