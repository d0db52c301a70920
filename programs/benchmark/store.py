"""The run directory: one JSON file per finished (user, method), written the moment it is done, so a crashed or
interrupted benchmark loses nothing and a re-run skips what is finished.

    <out>/settings.json                 the settings of the last invocation
    <out>/splits.json                   every user's split as example ids (no profile, no answer)
    <out>/users/<user_id>/<method>.json one MethodResult
"""

import json
import os
from pathlib import Path
from typing import Any

from programs.benchmark.methods.base import MethodResult
from programs.benchmark.settings import BenchmarkSettings

FINAL_STATUSES = ("ok", "cannot_run")
"""Results a re-run keeps; "failed" ones are tried again."""

RESULT_AFFECTING = ("dataset", "data_path", "n_train", "n_test", "seed", "num_iterations", "num_candidates",
                    "memory_size", "fewshot_k", "task_lm", "proposer_lm", "local_model", "route", "api_base",
                    "task_max_tokens", "proposer_max_tokens")
"""Settings a stored result depends on; a re-run into the same directory must keep them (users, methods and
threads may change)."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file and rename it over `path`, so no reader ever sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def safe_name(user_id: str) -> str:
    """A user id as a file name (ids from the loaders are already safe; anything else is escaped)."""
    return "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02x}" for c in user_id) or "_"


class ResultStore:
    """Per-(user, method) results of one benchmark run directory.

    Args:
        root: The run directory (created if missing).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def adopt(self, settings: BenchmarkSettings) -> None:
        """Record the settings, refusing a directory whose stored results were made with other result settings.

        Raises:
            ValueError: The directory holds results of a run with different result-affecting settings.
        """
        path = self.root / "settings.json"
        if path.exists():
            stored = json.loads(path.read_text())
            changed = [k for k in RESULT_AFFECTING if stored.get(k) != getattr(settings, k)]
            if changed:
                raise ValueError(
                    f"{self.root} holds results made with other settings ({', '.join(changed)}); choose another "
                    "--out directory or restore those settings to resume."
                )
        write_json_atomic(path, settings.to_dict())

    def path(self, user_id: str, method: str) -> Path:
        return self.root / "users" / safe_name(user_id) / f"{method}.json"

    def load(self, user_id: str, method: str) -> MethodResult | None:
        """The stored result, or None if there is none."""
        path = self.path(user_id, method)
        if not path.exists():
            return None
        return MethodResult.from_dict(json.loads(path.read_text()))

    def finished(self, user_id: str, method: str) -> bool:
        """Whether a re-run can skip this (user, method): it ran, or was found unable to run."""
        result = self.load(user_id, method)
        return result is not None and result.status in FINAL_STATUSES

    def save(self, result: MethodResult) -> Path:
        """Write one result now (atomically)."""
        path = self.path(result.user_id, result.method)
        write_json_atomic(path, result.to_dict())
        return path

    def results(self, user_ids: list[str], methods: tuple[str, ...]) -> list[MethodResult]:
        """The stored results of these users and methods, in that order (missing ones are left out)."""
        found = []
        for user_id in user_ids:
            for method in methods:
                result = self.load(user_id, method)
                if result is not None:
                    found.append(result)
        return found
