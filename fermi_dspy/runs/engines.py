"""Where users run: local threads (the default) or Ray tasks. Both run `worker.run_task` and hand the outcomes back to
the driver, which writes the run directory (a worker that sees it writes only its user's call ledger and checkpoint);
the same scheduler drives both (see `runner`)."""

import concurrent.futures
import contextvars
import logging
import os
from collections.abc import Collection
from typing import Any, Protocol

from fermi_dspy.runs.errors import RayNotInstalledError
from fermi_dspy.runs.guard import request_stop
from fermi_dspy.runs.worker import TaskOutcome, UserTask, failed_outcome, run_task

logger = logging.getLogger(__name__)

ENGINES = ("threads", "ray")
RAY_INSTALL = "pip install 'fermi-dspy[ray]'"
#: Environment variables a Ray job started by the run passes on to its workers (never API keys: those travel inside
#: the tasks, as `Secret`s).
FORWARDED_ENV = ("LITELLM_LOCAL_MODEL_COST_MAP", "DSPY_CACHEDIR", "FERMI_DSPY_DATA", "FERMI_DSPY_CACHE",
                 "FERMI_DSPY_OFFLINE", "FERMI_LOCAL_MODEL")
_POLL_SECONDS = 1.0


class Engine(Protocol):
    """Runs `UserTask`s somewhere and hands back their `TaskOutcome`s."""

    name: str
    max_workers: int

    def submit(self, task: UserTask) -> Any:
        """Start a task; return a handle."""

    def wait(self, handles: Collection[Any]) -> list[Any]:
        """Block until at least one of `handles` is done (or a poll interval passes); return the done ones."""

    def outcome(self, handle: Any, task: UserTask) -> TaskOutcome:
        """The outcome of a done task; an engine-level failure (a dead worker) becomes a failed outcome."""

    def cancel(self, handles: Collection[Any]) -> None:
        """Stop running tasks as soon as possible (their users restart cleanly on resume)."""

    def close(self) -> None:
        """Release the engine's resources."""


class ThreadEngine:
    """Users in a pool of `max_workers` threads of this process; LMs are shared per process.

    Args:
        max_workers: Users run at once.
    """

    name = "threads"

    def __init__(self, max_workers: int = 1) -> None:
        self.max_workers = max_workers
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="fermi-user")

    def submit(self, task: UserTask) -> concurrent.futures.Future:
        return self._pool.submit(contextvars.copy_context().run, run_task, task)

    def wait(self, handles: Collection[concurrent.futures.Future]) -> list[concurrent.futures.Future]:
        done, _ = concurrent.futures.wait(handles, timeout=_POLL_SECONDS,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        return list(done)

    def outcome(self, handle: concurrent.futures.Future, task: UserTask) -> TaskOutcome:
        try:
            return handle.result()
        except Exception as exc:  # run_task reports user failures itself; this is a bug in it
            return failed_outcome(task.user.user_id, f"{type(exc).__name__}: {exc}", type(exc).__name__)

    def cancel(self, handles: Collection[concurrent.futures.Future]) -> None:
        request_stop()
        for handle in handles:
            handle.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def import_ray() -> Any:
    """Import Ray, or raise `RayNotInstalledError` naming the install command."""
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalledError(
            f"engine='ray' needs Ray, which is not installed ({exc}). Install it with `{RAY_INSTALL}`, or use the "
            "default engine='threads'."
        ) from exc
    return ray


def forwarded_env() -> dict[str, str]:
    """The environment a Ray job started by the run gives its workers: the settings above, and a PYTHONPATH that
    includes the current directory (so `factory:` LM modules and students import as they do here)."""
    env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if os.getcwd() not in paths:
        paths.append(os.getcwd())
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


class RayEngine:
    """Users as Ray tasks on a Ray cluster.

    Uses the Ray runtime already initialized in this process if there is one; otherwise calls `ray.init(address)`,
    which connects to the cluster named by `address` or `$RAY_ADDRESS` (or one started with `ray start` on this
    machine), and else starts a local Ray instance; a runtime the engine started is shut down by `close`. Tasks are
    not retried by Ray (`max_retries=0`): a user whose worker died is recorded as failed and restarts on resume, so
    no user is paid for twice behind the run's back.

    Args:
        max_workers: Users run at once; None: the cluster's CPUs / `cpus_per_user`.
        address: The Ray cluster address; None uses Ray's usual discovery.
        cpus_per_user: CPUs Ray reserves for each user's task.
    """

    name = "ray"

    def __init__(self, max_workers: int | None = None, *, address: str | None = None,
                 cpus_per_user: float = 1.0) -> None:
        ray = import_ray()
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, runtime_env={"env_vars": forwarded_env()},
                     logging_level=logging.WARNING)
            self._owns = True
        elif address:
            logger.warning("Ray is already initialized in this process; ignoring address=%r.", address)
        self._remote = ray.remote(num_cpus=cpus_per_user, max_retries=0)(run_task)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        self.max_workers = max_workers or max(1, int(cpus // cpus_per_user))
        logger.info("Ray engine: %s CPUs in the cluster, up to %d users at once.", cpus, self.max_workers)

    def submit(self, task: UserTask) -> Any:
        return self._remote.remote(task)

    def wait(self, handles: Collection[Any]) -> list[Any]:
        ready, _ = self._ray.wait(list(handles), num_returns=1, timeout=_POLL_SECONDS)
        return list(ready)

    def outcome(self, handle: Any, task: UserTask) -> TaskOutcome:
        try:
            return self._ray.get(handle)
        except self._ray.exceptions.RayError as exc:
            return failed_outcome(task.user.user_id, f"{type(exc).__name__}: {exc}", type(exc).__name__)

    def cancel(self, handles: Collection[Any]) -> None:
        for handle in handles:
            try:
                self._ray.cancel(handle, force=True)
            except Exception as exc:  # already finished, or the cluster is gone
                logger.debug("Could not cancel a Ray task: %s", exc)

    def close(self) -> None:
        if self._owns:
            self._ray.shutdown()


def make_engine(name: str, *, max_workers: int | None, ray_address: str | None = None,
                ray_cpus_per_user: float = 1.0) -> Engine:
    """The engine called `name` ("threads" or "ray")."""
    if name == "threads":
        return ThreadEngine(max_workers or 1)
    if name == "ray":
        return RayEngine(max_workers, address=ray_address, cpus_per_user=ray_cpus_per_user)
    raise ValueError(f"engine={name!r}; use one of {ENGINES}.")
