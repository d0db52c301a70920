"""Where long work is: phases (scoring k/n, proposing, testing) reported as events that a display may listen to.

The library reports; it never draws. A compile reports `phase("scoring", total=n, detail="iteration 2/3")` and
advances it per scored example; a job reports "testing". Whoever shows progress installs a listener with
`listening(callback)`; events then reach it from every thread that copies the context (`fermi_dspy.parallel`,
the run's worker threads). `about(subject)` tags the events of one piece of work (e.g. a user id), and
`current_phase()` tells code running inside a phase where it is (a profiler tags LM calls with it).
"""

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a phase.

    Attributes:
        phase: What is being done: "scoring", "proposing", "testing", ...
        done: Steps done in this phase.
        total: Steps the phase has (0 when unknown).
        detail: Where the phase sits in the larger work, e.g. "iteration 2/3".
        subject: Whose work it is (e.g. a user id), from `about(...)`; "" when not set.
    """

    phase: str
    done: int
    total: int
    detail: str = ""
    subject: str = ""

    def describe(self) -> str:
        """E.g. "101224: scoring 17/24 (iteration 2/3)"."""
        count = f" {self.done}/{self.total}" if self.total else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.subject + ': ' if self.subject else ''}{self.phase}{count}{detail}"


Listener = Callable[[ProgressEvent], None]

_LISTENER: ContextVar[Listener | None] = ContextVar("fermi_progress_listener", default=None)
_SUBJECT: ContextVar[str] = ContextVar("fermi_progress_subject", default="")
_PHASE: ContextVar["Phase | None"] = ContextVar("fermi_progress_phase", default=None)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send the progress events of the block (and of the threads it starts) to `listener`."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


@contextlib.contextmanager
def about(subject: str) -> Iterator[None]:
    """Tag the block's events with `subject` (e.g. the user whose work it is)."""
    token = _SUBJECT.set(subject)
    try:
        yield
    finally:
        _SUBJECT.reset(token)


class Phase:
    """A phase in progress; `advance()` reports each step (thread-safe)."""

    def __init__(self, name: str, total: int, detail: str) -> None:
        self.name = name
        self.total = total
        self.detail = detail
        self.done = 0
        self._lock = threading.Lock()
        self._listener = _LISTENER.get()
        self._subject = _SUBJECT.get()

    def advance(self, steps: int = 1) -> None:
        with self._lock:
            self.done += steps
            done = self.done
        self._emit(done)

    def _emit(self, done: int) -> None:
        if self._listener is not None:
            self._listener(ProgressEvent(self.name, done, self.total, self.detail, self._subject))


@contextlib.contextmanager
def phase(name: str, total: int = 0, detail: str = "") -> Iterator[Phase]:
    """Report a phase of `total` steps (0: unknown) for the block; yields the `Phase` to advance."""
    current = Phase(name, total, detail)
    token = _PHASE.set(current)
    current._emit(0)
    try:
        yield current
    finally:
        _PHASE.reset(token)


def current_phase() -> str | None:
    """The name of the innermost phase running in this context, or None."""
    current = _PHASE.get()
    return None if current is None else current.name
