"""The run manifest: what a run is, and the check that a resume is the same run.

The manifest's `identity` holds everything that changes a user's result: the job's settings, the LM specs (no
secrets), the seed, the per-user caps and the data (data set, sha256 of the data file, split sizes). A resume must
match it exactly. How the run is executed (engine, workers, threads, run-level caps, retries) may change between
invocations; each invocation's execution settings are logged in events.jsonl. Which users are run may change too
(e.g. a larger `--users`), but a finished user whose own data changed is refused.

Every result.json carries the fingerprint and identity of the settings it was computed under, so a resume also
refuses a result from other settings (copied in, or written while the manifest was lost), naming the differences, and
a manifest that is missing or unreadable while users/ holds records cannot be replaced silently
(`check_orphaned_records`).
"""

import hashlib
import json
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fermi_dspy.runs.errors import ManifestMismatchError

FORMAT = "fermi-dspy-run/2"  # /2: results carry their settings fingerprint; call ledgers


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


def differences(old: Any, new: Any) -> list[str]:
    """The settings that differ between two identities, as "key.path: old -> new" lines."""
    return _differences(old, json.loads(json.dumps(new, default=str)))


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


def check_resume(existing: Mapping[str, Any], identity: Mapping[str, Any], run_dir: Path, *,
                 also_accepted: frozenset[str] = frozenset()) -> list[str]:
    """Check that `identity` is the run recorded in `existing`; return notes about harmless changes.

    `also_accepted` are fingerprints of the same settings as recorded by earlier versions.

    Raises:
        ManifestMismatchError: A result-affecting setting differs (the message lists each difference).
    """
    if existing.get("format") != FORMAT:
        raise ManifestMismatchError(
            f"{run_dir} holds a run of format {existing.get('format')!r}, not {FORMAT!r}; use another run directory."
        )
    old_identity = existing.get("identity", {})
    if existing.get("fingerprint") not in {fingerprint(identity), *also_accepted}:
        listed = _listed(differences(old_identity, dict(identity)))
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


def _listed(changes: list[str]) -> str:
    return "\n".join(f"  {c}" for c in changes[:30]) or "  (the fingerprint differs)"


def other_settings_error(run_dir: Path, users: list[str], old_identity: Any, identity: Mapping[str, Any],
                         users_path: Path) -> ManifestMismatchError:
    """The refusal of finished users whose results were computed under other settings than this run's."""
    names = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
    listed = _listed(differences(old_identity, dict(identity))) if isinstance(old_identity, Mapping) else \
        "  (their settings are not recorded)"
    return ManifestMismatchError(
        f"Cannot resume {run_dir}: {len(users)} finished user(s) ({names}) were computed under other settings than "
        f"this run's:\n{listed}\nResume with the settings they were computed under, move their folders out of "
        f"{users_path} (they are then run again), or pass a new run directory to start a new run."
    )


def check_orphaned_records(run_dir: Path, state: str, records: Mapping[str, Mapping[str, Any]],
                           identity: Mapping[str, Any], *, rebuild: bool,
                           also_accepted: frozenset[str] = frozenset()) -> str:
    """Decide about user records left under a missing or unreadable manifest.

    Args:
        run_dir: The run directory.
        state: What is wrong with the manifest ("is missing", "is not valid JSON (...)", ...).
        records: Per user folder: {"finished": bool, "fingerprints": set of str, "identity": the identity its
            result.json records, or None}.
        identity: The settings given now.
        rebuild: Write a new manifest from the settings given now if every record was computed under them.

    Returns:
        A note for the log, when the manifest may be rebuilt.

    Raises:
        ManifestMismatchError: Always, unless `rebuild` and no record was computed under other settings.
    """
    current = fingerprint(identity)
    finished = sum(1 for r in records.values() if r["finished"])
    header = (f"Cannot resume {run_dir}: manifest.json {state}, but users/ holds records of {len(records)} users "
              f"({finished} finished). Without the manifest the settings they were computed under cannot be checked "
              "against the ones given now, and resuming could mix results of two runs.")
    other = {name: r for name, r in records.items() if r["fingerprints"] - {current, *also_accepted}}
    if other:
        old = next((r["identity"] for r in other.values() if isinstance(r["identity"], Mapping)), None)
        listed = _listed(differences(old, dict(identity))) if old is not None else "  (not recorded)"
        names = ", ".join(sorted(other)[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
        raise ManifestMismatchError(
            f"{header}\n{len(other)} of them ({names}) were computed under other settings:\n{listed}\n"
            "Resume with the settings they were computed under and rebuild_manifest=True (--rebuild-manifest), or "
            "pass a new run directory to start a new run."
        )
    if not rebuild:
        raise ManifestMismatchError(
            f"{header}\nEvery one of them that records its settings was computed under the settings given now "
            f"(fingerprint {current[:12]}): pass rebuild_manifest=True (--rebuild-manifest) to write a new manifest "
            "from them and resume, or pass a new run directory to start a new run."
        )
    return (f"manifest.json {state}; rebuilt it from the settings given now, under which the records of all "
            f"{len(records)} users were computed")
