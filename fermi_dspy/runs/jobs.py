"""The per-user unit of work a run executes: `UserJob`, with its input (`UserData`), context and output.

A job is a picklable object: the run sends it with one user's data to a worker (a thread, or a Ray task on another
machine), the worker builds the LMs and calls `job.run(user, context)`, and the run writes what it returns into
`users/<user_id>/`. Jobs never touch the run directory themselves, so they work the same on every engine.

Fermi personalization (`FermiJob`) is one job; the main job and the benchmark plug in their own by subclassing
`UserJob`.
"""

import abc
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import dspy

from fermi_dspy.accounting import LMUsage
from fermi_dspy.profile import Profile


def example_to_dict(example: dspy.Example) -> dict[str, Any]:
    """An example's fields and which of them are inputs, as plain JSON-able data."""
    return {"fields": dict(example.items()), "inputs": sorted(example.inputs().keys())}


@dataclass(frozen=True)
class UserData:
    """One user's input to a job.

    Attributes:
        user_id: Unique id of the user in the run.
        train: The user's examples the job learns from (for Fermi, the trainset).
        test: The user's held-out examples the result is scored on (may be empty).
        profile: The user's profile: a dict of attributes, a text, or None.
        origin: Where the user came from (e.g. "records.jsonl"), for messages.
    """

    user_id: str
    train: tuple[dspy.Example, ...]
    test: tuple[dspy.Example, ...] = ()
    profile: Profile = None
    origin: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", tuple(self.train))
        object.__setattr__(self, "test", tuple(self.test))

    def fingerprint(self) -> str:
        """sha256 of the user's data (id, profile, examples), independent of `origin`."""
        payload = {
            "user_id": self.user_id,
            "profile": self.profile,
            "train": [example_to_dict(e) for e in self.train],
            "test": [example_to_dict(e) for e in self.test],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class WorkEstimate:
    """What one user's job is expected to cost, before anything is spent.

    Attributes:
        calls_max: Most LM calls the job can make (without adapter fallbacks, which the call caps still count).
        min_calls: Fewest calls the job can produce a result with; a user given fewer is not started.
        task_calls: Task-LM calls at most.
        proposer_calls: Proposer-LM calls at most.
        prompt_tokens: Expected prompt tokens.
        completion_tokens: Expected completion tokens.
        prompt_tokens_max: Prompt tokens at most (every call with the longest context the settings allow).
        completion_tokens_max: Completion tokens at most (every completion as long as the settings allow).
    """

    calls_max: int = 0
    min_calls: int = 0
    task_calls: int = 0
    proposer_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_max: int = 0
    completion_tokens_max: int = 0

    def __add__(self, other: "WorkEstimate") -> "WorkEstimate":
        return WorkEstimate(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class JobContext:
    """What a job gets to run one user: the LMs and the user's share of the budgets.

    Attributes:
        task_lm: The task LM (guarded: calls are counted; a broken endpoint aborts the user).
        proposer_lm: The proposer LM (guarded likewise).
        max_calls: The user's LM-call allotment, or None for no cap. The job must never make more calls.
        max_cost: The user's USD allotment, or None for no cap (only where DSPy reports cost).
        seed: The run's seed.
        num_threads: Parallel LM calls within this user.
        usage: Returns the user's LM usage so far (every call through the two LMs and their copies).
        previous: The result of the user's earlier finished attempt, when the job asked to run it again (`redo`), or
            when the user's input changed and the job updates changed users (`UserJob.updates_changed_users`).
        previous_files: That attempt's files named in `UserJob.previous_files` (name -> text; those it had).
        changed_input: The user's input changed since `previous` was computed (an update, not a `redo`).
        checkpoint: What an earlier attempt at this user, stopped or failed before it finished, saved with
            `save_checkpoint` for the same input ({} if nothing).
        save_checkpoint: Saves a JSON-able state of the work finished so far (replacing the last one), durably, in
            users/<id>/checkpoint.json: if this attempt is stopped, killed or fails, the next attempt gets it as
            `checkpoint` and need not redo that work. The file goes when the user's result is committed.
    """

    task_lm: dspy.BaseLM
    proposer_lm: dspy.BaseLM
    max_calls: int | None
    max_cost: float | None
    seed: int
    num_threads: int
    usage: Callable[[], LMUsage]
    previous: dict[str, Any] | None = None
    previous_files: dict[str, str] = field(default_factory=dict)
    changed_input: bool = False
    checkpoint: dict[str, Any] = field(default_factory=dict)
    save_checkpoint: Callable[[dict[str, Any]], None] = field(default=lambda state: None)  # in memory: not kept


@dataclass
class JobOutput:
    """What a job returns for one user.

    Attributes:
        result: Small JSON-able summary, stored as `result` in users/<id>/result.json.
        files: More files for users/<id>/ (name -> text), e.g. {"program.json": ...}; written before result.json.
        budget_limited: The user's work was cut short by its LM-call or cost allotment.
    """

    result: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    budget_limited: bool = False


class UserJob(abc.ABC):
    """A per-user unit of work. Subclasses must be picklable (they are sent to worker processes).

    Attributes:
        name: Short name of the job, stored in the manifest.
        updates_changed_users: A finished user whose input changed (its input hash differs) is run again with its
            earlier result and files in the context (`JobContext.previous`, `previous_files`), for the job to update
            it, instead of refusing the resume. The data file's hash then leaves the run's identity: each user's own
            input hash decides what is run again.
        previous_files: The files of a user's earlier attempt that the job reads when it runs the user again.
    """

    name: str = "job"
    updates_changed_users: bool = False
    previous_files: tuple[str, ...] = ()

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """The job's settings as JSON (no secrets). They go into the manifest; a resume with other settings is
        refused."""

    def check(self, user: UserData) -> str | None:
        """Why this user cannot be run (a bad record), found before any LM call; None if the user is fine."""
        return None

    @abc.abstractmethod
    def estimate(self, user: UserData, *, seed: int = 0) -> WorkEstimate:
        """The LM calls and tokens this user is expected to cost, without any LM call."""

    def call_bounds(self, user: UserData, *, seed: int = 0) -> tuple[int, int]:
        """(fewest calls the job can produce a result with, most calls it can make) for this user.

        Used to split budgets for every user of a run, so jobs should override it when `estimate` is slow.
        """
        estimate = self.estimate(user, seed=seed)
        return estimate.min_calls, estimate.calls_max

    def redo(self, result: Mapping[str, Any]) -> bool:
        """Whether a user finished in an earlier invocation is to be run again, given its `result` (what `run`
        returned then): e.g. a benchmark asked for methods that user was not run with. The attempt then finds that
        result in `context.previous`, and the files it returns are written over the user's earlier ones (those it
        does not return stay). What the earlier attempts spent stays charged. Default: never."""
        return False

    @abc.abstractmethod
    def run(self, user: UserData, context: JobContext) -> JobOutput:
        """Do the user's work with `context`'s LMs, within `context.max_calls` calls.

        Raise an exception to record the user as failed (its message, with secrets removed, becomes the reason).
        """


def describe_object(value: Any) -> Any:
    """A JSON-able description of a setting: plain values as they are, classes/functions/objects by their name."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): describe_object(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [describe_object(v) for v in value]
    target = value if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")) else type(value)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(target).__name__)}"
