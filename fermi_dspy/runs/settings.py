"""How a run executes (`RunSettings`) and where its users came from (`DataSource`)."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fermi_dspy.data import BadRecord
from fermi_dspy.runs.engines import ENGINES

BadRecordPolicy = Literal["raise", "skip"]


@dataclass(frozen=True)
class RunSettings:
    """Seed, engine, parallelism, budgets and policies of a run.

    Attributes:
        seed: Seeds every user's job (Fermi's split and proposals); same seed + deterministic LM = same results.
        engine: "threads" (this process, default) or "ray" (Ray tasks on a Ray cluster).
        max_workers: Users run at once (threads default 1; Ray default: the cluster's CPUs / ray_cpus_per_user).
        num_threads: Parallel LM calls within one user. At most max_workers x num_threads calls are in flight, which
            is how a provider's rate limit is respected (429s that still happen are retried with backoff).
        max_calls_per_user: Cap on one user's LM calls (compile and test together), all attempts included.
        max_calls_per_run: Cap on the run's LM calls, split into per-user allotments in user order (see `budget`).
        max_cost_per_user: Cap in USD on one user's calls, where DSPy reports cost (hosted LiteLLM models).
        max_cost_per_run: Cap in USD on the run, likewise; each running user may overshoot by one call.
        on_bad_record: "raise" refuses to start when the input has bad records; "skip" leaves them out and lists
            them in input_problems.json and the summary.
        resume: Continue the run already in the run directory (finished users are skipped). False refuses to use a
            directory that already holds a run.
        rebuild_manifest: When manifest.json is missing or unreadable but users/ holds records, write a new manifest
            from the settings given now; allowed only if every record that names its settings was computed under
            them (otherwise the resume is refused, listing the differences).
        retry_failed: On resume, run again users whose last attempt failed.
        user_retries: Extra attempts, within this invocation, for a user that failed (after the LM client's own
            retries of each call). A retry is queued behind the other users and gets what is left of its allotment.
        display_progress: Show a progress bar over users.
        ray_address: Ray cluster address (engine="ray"); None uses `$RAY_ADDRESS`, a local `ray start` cluster, or
            starts a local instance.
        ray_cpus_per_user: CPUs Ray reserves per user task.
    """

    seed: int = 0
    engine: str = "threads"
    max_workers: int | None = None
    num_threads: int = 1
    max_calls_per_user: int | None = None
    max_calls_per_run: int | None = None
    max_cost_per_user: float | None = None
    max_cost_per_run: float | None = None
    on_bad_record: BadRecordPolicy = "raise"
    resume: bool = True
    rebuild_manifest: bool = False
    retry_failed: bool = True
    user_retries: int = 0
    display_progress: bool = True
    ray_address: str | None = None
    ray_cpus_per_user: float = 1.0

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine={self.engine!r}; use one of {ENGINES}.")
        if self.on_bad_record not in ("raise", "skip"):
            raise ValueError(f"on_bad_record={self.on_bad_record!r}; use 'raise' or 'skip'.")
        for name in ("max_workers", "max_calls_per_user", "max_calls_per_run", "num_threads"):
            value, optional = getattr(self, name), name != "num_threads"
            bad = isinstance(value, bool) or not isinstance(value, int) or value < 1
            if bad and not (optional and value is None):
                raise ValueError(f"{name} must be a positive int{' or None' if optional else ''}, got {value!r}.")
        for name in ("max_cost_per_user", "max_cost_per_run"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                raise ValueError(f"{name} must be a positive number of USD or None, got {value!r}.")
        if isinstance(self.user_retries, bool) or not isinstance(self.user_retries, int) or self.user_retries < 0:
            raise ValueError(f"user_retries must be an int >= 0, got {self.user_retries!r}.")
        if self.ray_cpus_per_user <= 0:
            raise ValueError(f"ray_cpus_per_user must be > 0, got {self.ray_cpus_per_user!r}.")

    def identity(self) -> dict[str, Any]:
        """The settings that change a user's result (part of the manifest's identity)."""
        return {"seed": self.seed, "max_calls_per_user": self.max_calls_per_user,
                "max_cost_per_user": self.max_cost_per_user}

    def execution(self) -> dict[str, Any]:
        """The settings that may change between invocations of one run."""
        identity = self.identity()
        return {k: v for k, v in asdict(self).items() if k not in identity}


@dataclass(frozen=True)
class DataSource:
    """Where a run's users came from.

    Attributes:
        dataset: The data set name (e.g. "opinionqa_hwang"), or None for users given in memory.
        path: The data file, or None.
        sha256: sha256 of the data file, or None.
        split: How train/test were drawn (e.g. {"n_train": 10, "n_test": 20}); {} when given per user.
        problems: Bad records found in the input (each with its file and line).
        excluded: Valid data left out on purpose (e.g. users with too few answers for the split).
    """

    dataset: str | None = None
    path: str | None = None
    sha256: str | None = None
    split: dict[str, Any] = field(default_factory=dict)
    problems: Sequence[BadRecord] = ()
    excluded: Sequence[BadRecord] = ()

    def identity(self) -> dict[str, Any]:
        """What of the data changes results: the data set, the file's content and the split."""
        return {"dataset": self.dataset, "sha256": self.sha256, "split": dict(self.split)}

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "path": self.path, "sha256": self.sha256, "split": dict(self.split),
                "bad_records": len(self.problems), "excluded": len(self.excluded)}
