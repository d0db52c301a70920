"""The run manifest: what a run is, and the check that a resume is the same run.

The manifest's `identity` holds everything that changes a user's result: the job's settings, the LM specs (no
secrets), the seed, the per-user caps and the data (data set, sha256 of the data file, split sizes). A resume must
match it exactly. How the run is executed (engine, workers, threads, run-level caps, retries) may change between
invocations; each invocation's execution settings are logged in events.jsonl. Which users are run may change too
(e.g. a larger `--users`), but a finished user whose own data changed is refused.
"""

import hashlib
import json
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fermi_dspy.runs.errors import ManifestMismatchError

FORMAT = "fermi-dspy-run/1"


def fingerprint(identity: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of `identity`."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def versions() -> dict[str, str]:
    """Versions of Python, DSPy and fermi-dspy."""
    import dspy

    import fermi_dspy

    return {"python": platform.python_version(), "dspy": dspy.__version__, "fermi_dspy": fermi_dspy.__version__}


def build_manifest(identity: Mapping[str, Any], *, data_source: Mapping[str, Any],
                   execution: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest of a new run.

    Args:
        identity: The result-affecting settings (see the module docstring).
        data_source: Where the users came from (path, data set, sha256, counts), for people.
        execution: The first invocation's execution settings, for people.
    """
    return {
        "format": FORMAT,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fingerprint": fingerprint(identity),
        "identity": dict(identity),
        "data_source": dict(data_source),
        "execution": dict(execution),
        "versions": versions(),
    }


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{where}: (absent) -> {new[key]!r}")
            elif key not in new:
                out.append(f"{where}: {old[key]!r} -> (absent)")
            else:
                out.extend(_differences(old[key], new[key], where))
        return out
    if json.dumps(old, sort_keys=True, default=str) != json.dumps(new, sort_keys=True, default=str):
        return [f"{prefix}: {old!r} -> {new!r}"]
    return []


def check_resume(existing: Mapping[str, Any], identity: Mapping[str, Any], run_dir: Path) -> list[str]:
    """Check that `identity` is the run recorded in `existing`; return notes about harmless changes.

    Raises:
        ManifestMismatchError: A result-affecting setting differs (the message lists each difference).
    """
    if existing.get("format") != FORMAT:
        raise ManifestMismatchError(
            f"{run_dir} holds a run of format {existing.get('format')!r}, not {FORMAT!r}; use another run directory."
        )
    old_identity = existing.get("identity", {})
    if existing.get("fingerprint") != fingerprint(identity):
        changes = _differences(old_identity, dict(json.loads(json.dumps(identity, default=str))))
        listed = "\n".join(f"  {c}" for c in changes[:30]) or "  (the fingerprint differs)"
        raise ManifestMismatchError(
            f"Cannot resume {run_dir}: it holds a run with other settings, data or LMs:\n{listed}\n"
            "Resume with the same settings, or pass a new run directory to start a new run."
        )
    notes = []
    old_versions, now = existing.get("versions", {}), versions()
    for name, value in now.items():
        if old_versions.get(name) not in (None, value):
            notes.append(f"{name} was {old_versions[name]} when the run started and is {value} now")
    return notes
