"""Serve a finished many-user run: each user's personalized program by user id, loaded on demand.

```python
from fermi_dspy.runs import ProgramStore

store = ProgramStore("runs/hwang")          # refuses a run that is still in progress
len(store), "guns-53" in store, list(store)[:3]
with dspy.context(lm=task_lm):
    prediction, prompt = store.answer("guns-53", question="...", options=["Yes", "No"])
```

The store reads the run's manifest to know which student the users were personalized from, and rebuilds each
user's `PersonalizedProgram` around a fresh instance of it from `users/<dir>/program.json`. Loaded programs are kept
in a bounded least-recently-used cache; the store is safe to share between threads (a program's `forward` is
read-only, so threads may call the same program at once).
"""

import importlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dspy

from fermi_dspy.program import PersonalizedProgram
from fermi_dspy.runs.errors import RunError
from fermi_dspy.runs.layout import LOCK, RESULT, USERS, RunDir, read_json
from fermi_dspy.selection import Embedder

PROGRAM_FILE = "program.json"


class RunInProgressError(RunError):
    """The run directory is being run by another process (its programs are not all written yet)."""


def _student_factory(description: str) -> Callable[[], dspy.Module]:
    """The student class named "module.Qualname" in a run's manifest."""
    module_name, _, name = description.rpartition(".")
    try:
        target: Any = importlib.import_module(module_name)
        for part in name.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RunError(f"The run's student {description!r} cannot be imported ({exc}); pass it: "
                       "ProgramStore(run_dir, student=MyStudent).") from exc
    return target


def _is_locked(path: Path) -> bool:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock to test
        return False
    lock = path / LOCK
    if not lock.exists():
        return False
    with lock.open("a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


def _stamp(folder: Path | None) -> tuple[int, int] | None:
    """(mtime, size) of a user's program file, to notice a rewrite; None when it is gone."""
    try:
        info = (folder / PROGRAM_FILE).stat() if folder is not None else None
    except OSError:
        return None
    return None if info is None else (info.st_mtime_ns, info.st_size)


class ProgramStore(Mapping[str, PersonalizedProgram]):
    """The finished users of a run directory, as a read-only mapping from user id to `PersonalizedProgram`.

    Args:
        run_dir: The run directory (`fermi-dspy personalize --run-dir`).
        student: The student the users were personalized from: a `dspy.Module` class or zero-argument factory.
            None imports the one the run's manifest names.
        embedder: The custom embedder the run's Fermi used, if any (the default TF-IDF one is saved with each
            program).
        max_loaded: Most programs kept loaded at once (least recently used ones are dropped).
        allow_running: Serve the users finished so far while another process still runs the directory.

    Raises:
        RunError: No run in `run_dir`, or its student cannot be imported.
        RunInProgressError: The run is still in progress (and `allow_running` is False).
    """

    def __init__(self, run_dir: str | Path, *, student: Callable[[], dspy.Module] | None = None,
                 embedder: Embedder | None = None, max_loaded: int = 256, allow_running: bool = False) -> None:
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be at least 1, got {max_loaded}.")
        self.run_dir = RunDir(run_dir)
        manifest, problem = self.run_dir.inspect_manifest()
        if manifest is None:
            raise RunError(f"{self.run_dir.path} holds no readable run ({problem or 'no manifest.json'}); point "
                           "ProgramStore at a directory made by `fermi-dspy personalize`.")
        if not allow_running and _is_locked(self.run_dir.path):
            raise RunInProgressError(f"{self.run_dir.path} is still being run by another process; wait for it to "
                                     "finish, or pass allow_running=True to serve the users finished so far.")
        job = manifest.get("identity", {}).get("job", {})
        self.student = student or _student_factory(job.get("student") or "fermi_dspy.programs.OpinionQA")
        self.embedder = embedder
        self.max_loaded = max_loaded
        self._lock = threading.Lock()
        #: user id -> (its loaded program, the `_stamp` of the file it was loaded from), least recently used first.
        self._loaded: OrderedDict[str, tuple[PersonalizedProgram, tuple[int, int] | None]] = OrderedDict()
        self._folders = self._scan()

    def _scan(self) -> dict[str, Path]:
        """user id -> folder, for every user with a result and a program."""
        folders: dict[str, Path] = {}
        root = self.run_dir.path / USERS
        try:
            entries = sorted(os.scandir(root), key=lambda entry: entry.name)
        except OSError:
            return folders
        for entry in entries:
            folder = Path(entry.path)
            result = read_json(folder / RESULT) if entry.is_dir() else None
            user_id = result.get("user_id") if isinstance(result, dict) else None
            if isinstance(user_id, str) and (folder / PROGRAM_FILE).is_file():
                folders[user_id] = folder
        return folders

    def refresh(self) -> None:
        """Look for users finished since the store was opened (with `allow_running`), and reload, when next asked
        for, every user whose program was rewritten since it was loaded (a resume that updated the user)."""
        folders = self._scan()
        with self._lock:
            self._folders = folders
            for user_id, (_, loaded_stamp) in list(self._loaded.items()):
                stamp = _stamp(folders.get(user_id))
                if stamp is None or stamp != loaded_stamp:
                    del self._loaded[user_id]

    def __len__(self) -> int:
        return len(self._folders)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._folders))

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._folders

    def __getitem__(self, user_id: str) -> PersonalizedProgram:
        with self._lock:
            if user_id in self._loaded:
                self._loaded.move_to_end(user_id)
                return self._loaded[user_id][0]
            folder = self._folders.get(user_id)
        if folder is None:
            known = ", ".join(list(self._folders)[:5])
            raise KeyError(f"No finished user {user_id!r} in {self.run_dir.path} ({len(self._folders)} users"
                           + (f", e.g. {known}" if known else "") + "). Check the id, or whether the user failed "
                           "(failures.json) or has not run yet.")
        stamp = _stamp(folder)
        program = PersonalizedProgram(self.student(), embedder=self.embedder)
        program.load(str(folder / PROGRAM_FILE))
        with self._lock:
            self._loaded[user_id] = program, stamp
            self._loaded.move_to_end(user_id)
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
        return program

    @property
    def loaded(self) -> int:
        """How many programs are loaded now."""
        return len(self._loaded)

    def answer(self, user_id: str, **inputs: Any) -> tuple[dspy.Prediction, int]:
        """Answer as the user would, with the LM configured in DSPy: (the prediction, the index of the prompt used)."""
        program = self[user_id]
        index = program.route(**inputs)
        with program.with_prompt(index):
            return program.program(**inputs), index
