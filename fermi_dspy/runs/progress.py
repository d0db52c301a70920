"""The progress line of a run: users done (failed, budget-limited, ETA) and where each running user is (its phase:
scoring k/n, proposing, testing), on one line that updates; and one log line per finished user."""

import logging
import threading
from collections import Counter

from tqdm import tqdm

from fermi_dspy.progress import ProgressEvent
from fermi_dspy.runs.worker import BUDGET_LIMITED, FAILED, TaskOutcome

logger = logging.getLogger(__name__)


def describe_outcome(outcome: TaskOutcome) -> str:
    """One line about a user's outcome."""
    usage = outcome.usage
    spent = f"{usage.calls} LM calls, {usage.total_tokens} tokens" + (
        f", ${usage.cost:.4f}" if usage.cost is not None else "")
    if outcome.status == FAILED:
        return f"user {outcome.user_id} failed after {outcome.seconds:.1f} s ({spent}): {outcome.error}"
    result = outcome.result
    scores = ", ".join(f"{key} {result[key]:.3f}" for key in ("train_score", "test_accuracy")
                       if isinstance(result.get(key), int | float))
    limited = " (budget-limited)" if outcome.status == BUDGET_LIMITED else ""
    return f"user {outcome.user_id} done{limited} in {outcome.seconds:.1f} s: {scores or 'ok'}; {spent}"


class RunProgress:
    """A tqdm bar over the run's users that counts outcomes; logs one line per user.

    Args:
        total: Users in the run.
        already: Users finished before this invocation.
        enabled: Show the bar.
    """

    def __init__(self, total: int, already: int, enabled: bool) -> None:
        self.counts: Counter[str] = Counter(done=already)
        self.bar = tqdm(total=total, initial=already, desc="users", unit="user", disable=not enabled,
                        dynamic_ncols=True, smoothing=0.1)
        self._lock = threading.Lock()
        self._phases: dict[str, ProgressEvent] = {}
        self._refresh()

    def _refresh(self, refresh: bool = False) -> None:
        c = self.counts
        counts = (f"done={c['done']}" + (f" budget={c['budget']}" if c["budget"] else "")
                  + (f" failed={c['failed']}" if c["failed"] else "")
                  + (f" no-budget={c['not_started']}" if c["not_started"] else ""))
        with self._lock:
            running = " | ".join(event.describe() for event in self._phases.values())
        self.bar.set_postfix_str(counts + (f" | {running}" if running else ""), refresh=refresh)

    def phase(self, event: ProgressEvent) -> None:
        """Show where a running user is (a `fermi_dspy.progress` listener; called from worker threads)."""
        with self._lock:
            self._phases[event.subject] = event
        self._refresh(refresh=True)

    def finished(self, outcome: TaskOutcome, *, final: bool = True) -> None:
        """Count and log a user's outcome (`final=False` for a failure that will be retried)."""
        with self._lock:
            self._phases.pop(outcome.user_id, None)
        line = describe_outcome(outcome)
        if outcome.status == FAILED:
            logger.warning(line + ("" if final else "; retrying later"))
            if not final:
                return
            self.counts["failed"] += 1
        else:
            logger.info(line)
            self.counts["done"] += 1
            if outcome.status == BUDGET_LIMITED:
                self.counts["budget"] += 1
        self._refresh()
        self.bar.update(1)

    def not_started(self, user_id: str, reason: str) -> None:
        """Count a user that got no budget."""
        logger.info("user %s not started: %s", user_id, reason)
        self.counts["not_started"] += 1
        self._refresh()
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()

