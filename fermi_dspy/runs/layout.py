"""The run directory: where everything lives, written atomically and with secrets removed.

    <run_dir>/
      manifest.json            what this run is: job settings, data source (path + sha256), LM specs (no secrets),
                               seed, per-user caps, versions, and the fingerprint a resume must match
      input_problems.json      bad records found in the input (file, line, user, kind, reason) and users left out
      events.jsonl             append-only log: run_started, user_started, user_done, user_failed, user_not_started,
                               run_finished (one JSON object per line; a line cut by a kill is ignored)
      users/<dir>/result.json  a finished user (written last: its presence is what "finished" means), with the
                               fingerprint and identity of the settings it was computed under
      users/<dir>/program.json the user's personalized program (and any other files the job returns)
      users/<dir>/failure.json the user's last attempt failed: reason, error type, attempts, calls and tokens spent
      users/<dir>/calls.jsonl  append-only ledger of every LM call of every attempt, written as the calls happen
                               (see `fermi_dspy.runs.ledger`): what an interrupted or killed attempt spent
      failures.json            every user whose last attempt failed, rewritten at the end of each invocation
      summary.json             counts, LM usage, budget, throughput; rewritten at the end of each invocation
      .lock                    held (flock) by the process running the directory

<dir> is the user id when it is a safe file name, else a slug of it plus a hash (result.json keeps the real id).
Every file is written to a temporary file in the same folder, flushed to disk and renamed over the target, so a
reader (or a resume after SIGKILL) sees either the old or the new file, never half of one. A file damaged from
outside is caught on resume: a result.json that does not parse or lacks a field is ignored (the user is run again,
with a logged reason), and an unreadable manifest over existing user records refuses the resume.
"""

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fermi_dspy.files import to_json, write_atomic
from fermi_dspy.runs.errors import RunLockedError
from fermi_dspy.runs.ledger import LEDGER, LedgerTotals, end_cut_line, read_ledger
from fermi_dspy.runs.redact import redact

MANIFEST = "manifest.json"
SUMMARY = "summary.json"
FAILURES = "failures.json"
INPUT_PROBLEMS = "input_problems.json"
EVENTS = "events.jsonl"
USERS = "users"
RESULT = "result.json"
FAILURE = "failure.json"
CHECKPOINT = "checkpoint.json"
LOCK = ".lock"

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_RESERVED_FILES = {RESULT, FAILURE, LEDGER, CHECKPOINT}
#: Statuses a result.json may hold (`fermi_dspy.runs.worker`'s statuses but "failed").
_RESULT_STATUSES = ("done", "budget_limited", "unparseable")


def user_dir_name(user_id: str) -> str:
    """The folder name of a user: the id itself when it is a safe file name, else a slug plus a short hash."""
    if _SAFE_NAME.fullmatch(user_id) and not user_id.endswith(".tmp"):
        return user_id
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", user_id).strip("-.")[:60] or "user"
    return f"{slug}-{hashlib.sha256(user_id.encode()).hexdigest()[:12]}"


def read_json_checked(path: Path) -> tuple[Any | None, str | None]:
    """(the JSON in `path`, None), (None, None) if the file is missing, or (None, why it cannot be read)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    except ValueError as exc:  # not UTF-8, or not JSON
        return None, f"is not valid JSON ({exc})"


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None if it is missing or unreadable."""
    return read_json_checked(path)[0]


def result_problem(data: Any, user_id: str) -> str | None:
    """Why `data` is not a complete result.json of `user_id`, or None if it is one."""
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not an object"
    if data.get("user_id") != user_id:
        return f"belongs to user {data.get('user_id')!r}"
    if data.get("status") not in _RESULT_STATUSES:
        return f"has status {data.get('status')!r}"
    usage, budget = data.get("usage"), data.get("budget")
    if not isinstance(usage, dict) or not isinstance(usage.get("calls"), int):
        return "has no LM usage"
    if not isinstance(budget, dict):
        return "has no budget record"
    for key in ("run_fingerprint", "input_sha256"):
        if not isinstance(data.get(key), str):
            return f"has no {key}"
    if not isinstance(data.get("run_identity"), dict):
        return "has no run_identity"
    if not isinstance(data.get("result"), dict):
        return "has no result"
    return None


def manifest_problem(data: Any) -> str | None:
    """Why `data` is not a readable manifest, or None."""
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not a manifest"
    if not isinstance(data.get("fingerprint"), str) or not isinstance(data.get("identity"), dict):
        return "has no fingerprint or identity"
    return None


class RunDir:
    """Paths and atomic writes of one run directory (see the module docstring for the layout).

    Only the process driving the run writes here; workers return their files to it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._events_lock = threading.Lock()

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def users_path(self) -> Path:
        return self.path / USERS

    def user_path(self, user_id: str) -> Path:
        return self.users_path / user_dir_name(user_id)

    def exists(self) -> bool:
        """Whether a run was started here (it has a manifest)."""
        return self.manifest_path.is_file()

    def read_manifest(self) -> dict[str, Any] | None:
        return read_json(self.manifest_path)

    def inspect_manifest(self) -> tuple[dict[str, Any] | None, str | None]:
        """(the manifest, None), (None, None) when there is none, or (None, why it is unreadable)."""
        data, problem = read_json_checked(self.manifest_path)
        if data is None:
            if problem is None and self.manifest_path.exists():  # e.g. a directory of that name
                problem = "cannot be read"
            return None, problem
        problem = manifest_problem(data)
        return (None, problem) if problem else (data, None)

    def user_records(self) -> dict[str, list[str]]:
        """Per user folder, the records it holds (result.json, failure.json, calls.jsonl); only non-empty ones."""
        out: dict[str, list[str]] = {}
        try:
            folders = list(os.scandir(self.users_path))
        except OSError:
            return out
        for folder in folders:
            if folder.is_dir():
                held = [name for name in (RESULT, FAILURE, LEDGER) if os.path.exists(os.path.join(folder.path, name))]
                if held:
                    out[folder.name] = held
        return out

    def write_text(self, name: str, text: str) -> None:
        """Write a top-level file atomically, secrets removed (e.g. a report the job's caller renders)."""
        write_atomic(self.path / name, redact(text))

    def write_json(self, name: str, data: Any) -> None:
        """Write a top-level JSON file atomically, secrets removed."""
        self.write_text(name, to_json(data))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's lock while the block runs; another process holding it raises `RunLockedError`."""
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        with (self.path / LOCK).open("a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunLockedError(
                    f"{self.path} is being run by {holder}; wait for it to finish (or stop it) before resuming."
                ) from exc
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            yield

    # -- per user -------------------------------------------------------------------------------------------------

    def read_result(self, user_id: str) -> dict[str, Any] | None:
        """A finished user's result.json, or None if the user has not finished (or its result.json is damaged)."""
        return self.inspect_result(user_id)[0]

    def inspect_result(self, user_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """(result, None) for a finished user, (None, None) for one without result.json, or (None, what is wrong)."""
        data, problem = read_json_checked(self.user_path(user_id) / RESULT)
        if data is None:
            return None, problem
        problem = result_problem(data, user_id)
        return (None, problem) if problem else (data, None)

    def checkpoint_path(self, user_id: str) -> Path:
        """Where an unfinished attempt keeps the work it has finished (see `JobContext.save_checkpoint`)."""
        return self.user_path(user_id) / CHECKPOINT

    def read_checkpoint(self, user_id: str, input_sha256: str, run_fingerprint: str | None) -> dict[str, Any]:
        """The state an interrupted or failed attempt of this run saved for this user's current input ({} if none,
        or if it was saved for another input or by another run, e.g. a user folder copied in)."""
        saved = read_json(self.checkpoint_path(user_id))
        if not isinstance(saved, dict) or saved.get("input_sha256") != input_sha256:
            return {}
        if saved.get("run_fingerprint") != run_fingerprint:
            return {}
        state = saved.get("state")
        return state if isinstance(state, dict) else {}

    def ledger_path(self, user_id: str) -> Path:
        """The user's call ledger (see `fermi_dspy.runs.ledger`)."""
        return self.user_path(user_id) / LEDGER

    def read_ledger(self, user_id: str) -> LedgerTotals:
        """What the user's attempts spent, per attempt."""
        return read_ledger(self.ledger_path(user_id))

    def read_failure(self, user_id: str) -> dict[str, Any] | None:
        """The failure.json of a user whose last attempt failed, or None."""
        data = read_json(self.user_path(user_id) / FAILURE)
        return data if isinstance(data, dict) and data.get("user_id") == user_id else None

    def commit_user(self, user_id: str, result: dict[str, Any], files: dict[str, str]) -> None:
        """Write a finished user's files, then its result.json (the commit point), then drop any failure.json and
        checkpoint.json."""
        folder = self.user_path(user_id)
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        for name, text in files.items():
            if name in _RESERVED_FILES or Path(name).name != name or name.startswith("."):
                raise ValueError(f"a job may not write a file named {name!r}")
            write_atomic(folder / name, redact(text), durable=False)
        write_atomic(folder / RESULT, redact(to_json(result)))
        (folder / FAILURE).unlink(missing_ok=True)
        (folder / CHECKPOINT).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # make the renames durable, where the platform can
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def record_failure(self, user_id: str, failure: dict[str, Any]) -> None:
        """Write (replace) a user's failure.json."""
        write_atomic(self.user_path(user_id) / FAILURE, redact(to_json(failure)))

    # -- events ---------------------------------------------------------------------------------------------------

    def event(self, kind: str, **fields: Any) -> None:
        """Append one event to events.jsonl (secrets removed)."""
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": kind, **fields}, default=str,
                          ensure_ascii=False)
        with self._events_lock:
            self.path.mkdir(parents=True, exist_ok=True)
            with (self.path / EVENTS).open("a", encoding="utf-8") as handle:
                handle.write(redact(line) + "\n")

    def end_cut_event(self) -> None:
        """Close a last events.jsonl line that a kill cut short, so the next event starts on its own line."""
        end_cut_line(self.path / EVENTS)

    def events(self) -> list[dict[str, Any]]:
        """Every complete event so far (a last line cut short by a kill is skipped)."""
        try:
            lines = (self.path / EVENTS).read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out
