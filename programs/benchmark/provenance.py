"""What produced a run: the LMs (without secrets), the machine, the software versions and the git commit."""

import datetime
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import dspy

from fermi_dspy.files import write_atomic

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


def describe_lm(lm: dspy.BaseLM | None) -> dict[str, Any] | None:
    """An LM's model name and generation settings; never its API key or base URL."""
    if lm is None:
        return None
    kwargs = getattr(lm, "kwargs", {}) or {}
    engine = getattr(lm, "_engine_spec", None)
    return {
        "model": getattr(lm, "model", str(lm)),
        "temperature": kwargs.get("temperature"),
        "max_tokens": kwargs.get("max_tokens") or kwargs.get("max_completion_tokens"),
        "engine": engine if isinstance(engine, str) else type(engine).__name__ if engine is not None else None,
        "cache": getattr(lm, "cache", None),
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The repository's HEAD commit, with "+dirty" when tracked files have uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def describe_environment() -> dict[str, Any]:
    """Machine and software versions."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "dspy": dspy.__version__,
        "gepa": _version("gepa"),
        "optuna": _version("optuna"),
        "llama_cpp_python": _version("llama_cpp_python"),
        "git_commit": git_commit(),
        "llama_threads": os.environ.get("FERMI_DSPY_THREADS"),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


#: One record per `bench run` into a run directory: its command line and the commit that answered its users.
INVOCATIONS = "invocations.json"


def read_invocations(root: str | Path) -> list[dict[str, Any]]:
    """The invocations recorded in a run directory, oldest first ([] for a run started before they were, or if the
    file cannot be read: it describes the run, it is not needed to resume it)."""
    path = Path(root) / INVOCATIONS
    try:
        records = json.loads(path.read_text()) if path.is_file() else []
    except (OSError, ValueError) as exc:
        logger.warning("Ignoring %s, which cannot be read (%s).", path, exc)
        return []
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def record_invocation(root: str | Path, command: str | None) -> None:
    """Record, before any user runs, which command and commit this invocation is: a report rendered later (e.g. of
    a run that was stopped) names them rather than the commit it is rendered at."""
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    records = [*read_invocations(root), {"command": command, "git_commit": git_commit(), "started": started,
                                         "users_run": None, "lm_calls": None}]
    write_atomic(Path(root) / INVOCATIONS, json.dumps(records, indent=2) + "\n")


def record_invocation_end(root: str | Path, users_run: int, lm_calls: int) -> None:
    """Add to the last invocation how many users it finished and LM calls it made (None for one that was killed)."""
    records = read_invocations(root)
    if records:
        records[-1].update(users_run=users_run, lm_calls=lm_calls)
        write_atomic(Path(root) / INVOCATIONS, json.dumps(records, indent=2) + "\n")
