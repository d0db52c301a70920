"""The parts: run-directory files, LM configs, the LM guard, estimates and custom jobs."""

import json
import pickle
from pathlib import Path

import dspy
import pytest

from fermi_dspy.accounting import UsageMeter
from fermi_dspy.files import write_atomic
from fermi_dspy.runs import (
    FermiJob,
    JobOutput,
    LMConfig,
    RunSettings,
    Secret,
    UserData,
    UserJob,
    WorkEstimate,
    estimate_users,
    personalize_users,
    run_user_jobs,
    user_dir_name,
)
from fermi_dspy.runs.errors import RunInterruptedError, UserAbortError
from fermi_dspy.runs.guard import clear_stop, guard_lm, request_stop
from fermi_dspy.runs.layout import RunDir
from fermi_dspy.runs.lms import safe_url
from tests.runs import lms
from tests.runs.conftest import run_kwargs


def test_user_dir_names_are_safe_and_distinct():
    assert user_dir_name("guns-53") == "guns-53"
    odd = [user_dir_name(u) for u in ("a/b", "a:b", "../x", ".hidden", "é", "")]
    assert len(set(odd)) == len(odd)
    assert all("/" not in name and not name.startswith(".") and name for name in odd)


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    write_atomic(tmp_path / "a.json", "{}")
    write_atomic(tmp_path / "a.json", '{"x": 1}')
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"] and json.loads((tmp_path / "a.json").read_text())


def test_an_event_line_cut_by_a_kill_is_skipped_and_closed(tmp_path):
    run = RunDir(tmp_path)
    run.event("first")
    with (tmp_path / "events.jsonl").open("a") as handle:
        handle.write('{"event": "cut sho')
    run.end_cut_event()
    run.event("second")
    assert [e["event"] for e in run.events()] == ["first", "second"]


def test_lm_configs_keep_secrets_out_of_what_is_written():
    config = LMConfig("openai/gpt-4o-mini", api_base="https://host:8443/v1?key=abc", api_key=Secret("sk-x"))
    assert config.describe()["api_base"] == "https://host:8443/v1"
    with pytest.raises(ValueError, match="credentials") as error:
        LMConfig("openai/gpt-4o-mini", api_base="https://user:pw-123456@host:8443/v1")
    assert "pw-123456" not in str(error.value) and "https://host:8443/v1" in str(error.value)
    assert "sk-x" not in json.dumps([config.describe(), config.execution()]) and "sk-x" not in repr(config)
    assert pickle.loads(pickle.dumps(config)).api_key.reveal() == "sk-x"  # travels to Ray workers
    assert safe_url(None) is None


def test_lm_config_resolution_reads_the_environment(monkeypatch):
    monkeypatch.setenv("FERMI_LM", "openai/gpt-4o-mini")
    monkeypatch.delenv("FERMI_PROPOSER_LM", raising=False)
    task = LMConfig().resolve("task")
    assert task.spec == "openai/gpt-4o-mini"
    assert LMConfig().resolve("proposer", default=task) == task
    monkeypatch.delenv("FERMI_LM")
    assert LMConfig().resolve("task").spec == "local"


def test_the_guard_counts_calls_of_every_copy_and_stops_on_request():
    usage = UsageMeter()
    guarded = guard_lm(lms.task_lm(), usage)
    copy = guarded.copy(temperature=0.0)
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=copy):
        predict(question="[u1] Do you support guns?")
    assert usage.usage().calls == 1 and usage.usage().total_tokens > 0
    request_stop()
    try:
        with pytest.raises(RunInterruptedError), dspy.context(lm=guarded):
            predict(question="[u1] Do you support guns?")
    finally:
        clear_stop()


def test_the_guard_seeds_sampled_calls_of_seedable_engines_by_their_content():
    usage = UsageMeter()
    proposer = guard_lm(lms.proposer_lm(), usage)
    predict = dspy.Predict("question -> new_prompt")

    def sample(rollout: int) -> str:
        with dspy.context(lm=proposer.copy(rollout_id=rollout, temperature=1.0)):
            return predict(question="[u1] Do you support guns?").new_prompt

    assert sample(1) == sample(1) != sample(2)


def test_a_broken_endpoint_aborts_the_user():
    class Broken:
        supported_params = frozenset()

        def complete(self, request):
            from dspy.utils.exceptions import LMServerError

            raise LMServerError("down; Authorization: Bearer sk-hidden-123456789", model="x")

    guarded = guard_lm(dspy.LM("rule/broken", engine=Broken(), cache=False, num_retries=0), UsageMeter())
    with pytest.raises(UserAbortError) as error, dspy.context(lm=guarded):
        dspy.Predict("question -> answer")(question="q")
    assert error.value.error_type == "LMServerError" and "sk-hidden" not in error.value.reason


def test_the_estimate_bounds_what_a_run_spends(users_file, tmp_path):
    data = users_file(3)
    estimate = estimate_users("hwang", data_path=data, **run_kwargs())
    summary = personalize_users("hwang", data_path=data, run_dir=tmp_path / "run", **run_kwargs())
    assert estimate.users == 3 and estimate.calls_max == 81
    assert summary.usage["calls"] <= estimate.calls_max
    assert summary.usage["prompt_tokens"] <= estimate.work.prompt_tokens_max
    assert summary.usage["completion_tokens"] <= estimate.work.completion_tokens_max
    assert estimate.to_dict()["max_concurrent_calls"] == 1


def test_the_estimate_prices_hosted_models():
    job = FermiJob(fermi=lms.FERMI)
    example = dspy.Example(question="[u1] Do you support guns?", options=["Yes", "No"], answer="Yes")
    user = UserData("u", [example.with_inputs("question", "options")] * 6)
    from fermi_dspy.runs.runner import estimate_user_jobs

    estimate = estimate_user_jobs([user], job, task_lm="openai/gpt-4o-mini", proposer_lm="openai/gpt-4o")
    assert estimate.usd is not None and 0 < estimate.usd <= estimate.usd_max
    assert "$" in estimate.format()


def test_fermi_job_refuses_arguments_the_run_owns():
    with pytest.raises(ValueError, match="max_lm_calls -> max_calls_per_user"):
        FermiJob(fermi={"max_lm_calls": 10})
    with pytest.raises(ValueError, match="unknown Fermi arguments"):
        FermiJob(fermi={"iterations": 10})


class CountingJob(UserJob):
    """A custom job: asks the task LM about each train example and writes a file."""

    name = "counting"

    def describe(self) -> dict:
        return {"name": self.name}

    def estimate(self, user: UserData, *, seed: int = 0) -> WorkEstimate:
        return WorkEstimate(calls_max=len(user.train), min_calls=1, task_calls=len(user.train))

    def run(self, user: UserData, context) -> JobOutput:
        predict = dspy.Predict("question -> answer")
        answers = []
        for example in user.train[: context.max_calls]:
            with dspy.context(lm=context.task_lm):
                answers.append(predict(question=example.question).answer)
        limited = context.max_calls is not None and context.max_calls < len(user.train)
        return JobOutput({"answers": answers}, {"answers.txt": "\n".join(answers)}, budget_limited=limited)


def test_a_custom_job_runs_in_the_same_engine(tmp_path):
    examples = [dspy.Example(question=f"[u{i}] Do you support guns?", answer="No").with_inputs("question")
                for i in range(3)]
    users = [UserData(f"user-{i}", examples) for i in range(3)]
    summary = run_user_jobs(users, CountingJob(), run_dir=tmp_path / "run", task_lm=lms.TASK,
                            settings=RunSettings(max_calls_per_user=2, display_progress=False))
    assert summary.done == 3 and summary.budget_limited == 3
    result = json.loads((tmp_path / "run" / "users" / "user-0" / "result.json").read_text())
    assert result["job"] == "counting" and result["result"]["answers"] == ["No", "No"]
    assert (tmp_path / "run" / "users" / "user-0" / "answers.txt").read_text() == "No\nNo"
    assert Path(tmp_path / "run" / "manifest.json").exists()


class CheckpointingJob(UserJob):
    """Answers the train examples one by one, saving a checkpoint after each; can be told to fail after some."""

    name = "checkpointing"

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.seen_checkpoints: list[dict] = []

    def describe(self) -> dict:
        return {"name": self.name}

    def estimate(self, user: UserData, *, seed: int = 0) -> WorkEstimate:
        return WorkEstimate(calls_max=len(user.train), min_calls=1, task_calls=len(user.train))

    def run(self, user: UserData, context) -> JobOutput:
        self.seen_checkpoints.append(dict(context.checkpoint))
        answers = list(context.checkpoint.get("answers", []))
        predict = dspy.Predict("question -> answer")
        for example in user.train[len(answers):]:
            if self.fail_after is not None and len(answers) == self.fail_after:
                raise RuntimeError("the machine went away")
            with dspy.context(lm=context.task_lm):
                answers.append(predict(question=example.question).answer)
            context.save_checkpoint({"answers": answers})
        return JobOutput({"answers": answers, "calls": context.usage().calls})


def _checkpoint_users(answer: str = "No") -> list[UserData]:
    examples = [dspy.Example(question=f"[u0] Question {i}?", answer=answer).with_inputs("question") for i in range(4)]
    return [UserData("user-0", examples)]


def test_an_attempt_that_fails_partway_leaves_its_finished_work_to_the_next_attempt(tmp_path):
    run = tmp_path / "run"
    settings = RunSettings(display_progress=False)
    failing = CheckpointingJob(fail_after=3)
    assert run_user_jobs(_checkpoint_users(), failing, run_dir=run, task_lm=lms.TASK, settings=settings).failed == 1
    saved = json.loads((run / "users" / "user-0" / "checkpoint.json").read_text())
    assert saved["state"] == {"answers": ["No", "No", "No"]} and saved["attempt"] == 1

    resumed = CheckpointingJob()
    assert run_user_jobs(_checkpoint_users(), resumed, run_dir=run, task_lm=lms.TASK, settings=settings).done == 1
    assert resumed.seen_checkpoints == [{"answers": ["No", "No", "No"]}]
    result = json.loads((run / "users" / "user-0" / "result.json").read_text())["result"]
    assert result == {"answers": ["No"] * 4, "calls": 1}  # only the question the failed attempt had not answered
    assert not (run / "users" / "user-0" / "checkpoint.json").exists()  # gone with the commit


def test_a_checkpoint_saved_for_other_input_is_not_used(tmp_path):
    run = tmp_path / "run"
    settings = RunSettings(display_progress=False)
    run_user_jobs(_checkpoint_users(), CheckpointingJob(fail_after=2), run_dir=run, task_lm=lms.TASK,
                  settings=settings)
    changed = CheckpointingJob()
    run_user_jobs(_checkpoint_users(answer="Yes"), changed, run_dir=run, task_lm=lms.TASK,
                  settings=settings)
    assert changed.seen_checkpoints == [{}]
