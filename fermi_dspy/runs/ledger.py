"""The per-user call ledger, users/<dir>/calls.jsonl: every LM call a user's attempts make, persisted as it happens.

Without it, the calls of an attempt that never reported back (the run was stopped with SIGTERM or Ctrl-C, killed
with SIGKILL, or crashed) would be forgotten, and a resume would give the user its whole allotment again. The ledger is
append-only, one JSON object per line:

    {"attempt": 2, "event": "start", "run_fingerprint": "...", "max_calls": 12}   the driver, before the attempt
    {"attempt": 2, "event": "call"}                                               the worker, before each LM call
                                                                                  ("requests": k for a call with n=k)
    {"attempt": 2, "event": "reply", "prompt_tokens": 812, "completion_tokens": 9, "cost": null, "cache_hit": false}
    {"attempt": 2, "event": "failed"}                                             a call that raised
    {"attempt": 2, "event": "end", "status": "done", "usage": {...}}              the driver, when the attempt reported

A call is charged before it is sent, so a kill can never leave a sent call uncharged (at most one charged call per
kill was never sent). Each line is flushed to the operating system at once, so it survives the death of the process
(SIGKILL, OOM); a machine crash may lose the last lines. A line cut short by a kill is skipped, and the next attempt
starts on a fresh line.

On resume, `read_ledger` sums the attempts: the calls charged are the "call" lines (or an "end" line's count when
the worker could not write here: a Ray worker on a machine that does not see the run directory), tokens and cost come
from the "end" line, else from the "reply" lines. The user's and the run's LM-call caps are charged with every attempt.
"""

import json
import logging
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fermi_dspy.accounting import LMUsage

logger = logging.getLogger(__name__)

LEDGER = "calls.jsonl"


def end_cut_line(path: Path) -> None:
    """Close a last line that a kill cut short, so the next line starts on its own."""
    try:
        with path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            cut = handle.read(1) != b"\n"
    except OSError:
        return
    if cut:
        with path.open("a", encoding="utf-8") as handle:
            handle.write("\n")


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one record to a ledger (the driver's lines: start and end of an attempt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=str) + "\n")


class CallLedger:
    """A worker's writer of one attempt's lines (thread-safe). Use `open`; a ledger that cannot be opened is None.

    Args:
        handle: The ledger file, opened for appending.
        attempt: The attempt's number.
    """

    def __init__(self, handle: Any, attempt: int) -> None:
        self._handle = handle
        self._attempt = attempt
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path | None, attempt: int) -> "CallLedger | None":
        """The ledger at `path` for `attempt`, or None when there is no path or its folder is not reachable here."""
        if not path:
            return None
        path = Path(path)
        if not path.parent.is_dir():  # e.g. a Ray worker on a machine that does not see the run directory
            logger.debug("No call ledger at %s on this machine; the driver records the attempt when it ends.", path)
            return None
        try:
            end_cut_line(path)
            return cls(path.open("a", encoding="utf-8"), attempt)
        except OSError as exc:
            logger.warning("Cannot write the call ledger %s (%s); calls of this attempt are counted when it ends.",
                           path, exc)
            return None

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps({"attempt": self._attempt, **record}, default=str) + "\n"
        with self._lock:
            if self._handle.closed:
                return
            self._handle.write(line)
            self._handle.flush()

    def call(self, requests: int = 1) -> None:
        """Charge one LM call of `requests` engine requests (before it is sent)."""
        self._write({"event": "call"} if requests == 1 else {"event": "call", "requests": requests})

    def reply(self, prompt_tokens: int, completion_tokens: int, cost: float | None, cache_hit: bool) -> None:
        """Record a reply's usage."""
        self._write({"event": "reply", "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "cost": cost, "cache_hit": cache_hit})

    def failed(self) -> None:
        """Record a call that raised."""
        self._write({"event": "failed"})

    def close(self) -> None:
        with self._lock:
            self._handle.close()


@dataclass
class AttemptTotals:
    """What one attempt spent, as far as the ledger knows: its "end" line, else its own call and reply lines."""

    usage: LMUsage = field(default_factory=LMUsage)
    ended: bool = False
    fingerprint: str | None = None


@dataclass
class LedgerTotals:
    """A user's attempts, read from its ledger (lines that cannot be read, such as one cut by a kill, are skipped).

    Attributes:
        attempts: attempt number -> what it spent.
    """

    attempts: dict[int, AttemptTotals] = field(default_factory=dict)

    @property
    def last_attempt(self) -> int:
        return max(self.attempts, default=0)

    @property
    def fingerprints(self) -> set[str]:
        return {a.fingerprint for a in self.attempts.values() if a.fingerprint}

    def usage(self, *, since: int = 0) -> LMUsage:
        """Summed usage of the attempts numbered from `since` on."""
        return sum((a.usage for n, a in self.attempts.items() if n >= since), LMUsage())


def _reply(record: dict[str, Any]) -> LMUsage:
    prompt, completion = int(record.get("prompt_tokens") or 0), int(record.get("completion_tokens") or 0)
    if record.get("cache_hit"):
        return LMUsage(cache_hits=1, cached_prompt_tokens=prompt, cached_completion_tokens=completion)
    cost = record.get("cost")
    return LMUsage(prompt_tokens=prompt, completion_tokens=completion, cost=None if cost is None else float(cost))


def read_ledger(path: Path) -> LedgerTotals:
    """Sum a user's ledger per attempt (an absent ledger is an empty one)."""
    totals = LedgerTotals()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return totals
    own: dict[int, LMUsage] = {}  # per attempt, what its call, failed and reply lines add up to
    for line in lines:
        try:  # a line cut short by a kill (or a blank one) does not parse
            record = json.loads(line)
            attempt = int(record["attempt"])
            event = record["event"]
        except (ValueError, KeyError, TypeError):
            continue
        current = totals.attempts.setdefault(attempt, AttemptTotals())
        counted = own.get(attempt, LMUsage())
        if event == "call":
            own[attempt] = counted + LMUsage(calls=int(record.get("requests") or 1))
        elif event == "failed":
            own[attempt] = counted + LMUsage(failed_calls=1)
        elif event == "reply":
            own[attempt] = counted + _reply(record)
        elif event == "start":
            current.fingerprint = record.get("run_fingerprint")
        elif event == "end":
            current.ended, current.usage = True, LMUsage.from_dict(record.get("usage"))
    for attempt, current in totals.attempts.items():
        counted = own.get(attempt, LMUsage())
        if not current.ended:
            current.usage = counted
        else:  # a worker that could not write here leaves the driver's end line as the only record of its calls
            current.usage = replace(current.usage, calls=max(current.usage.calls, counted.calls),
                                    failed_calls=max(current.usage.failed_calls, counted.failed_calls))
    return totals
