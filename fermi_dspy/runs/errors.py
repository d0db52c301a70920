"""Errors of many-user runs, and the two control-flow signals that stop one user's work or the whole run."""

from fermi_dspy.errors import FermiError


class RunError(FermiError, RuntimeError):
    """A many-user run cannot start or go on (the message says why and what to do)."""


class ManifestMismatchError(RunError, ValueError):
    """The run directory holds a run with other settings, data or LMs, so resuming it would mix two runs."""


class RunLockedError(RunError):
    """Another process is running in this run directory."""


class RayNotInstalledError(RunError, ImportError):
    """`engine="ray"` was asked for but Ray is not importable."""


class UserAbortError(BaseException):
    """Stops one user's work: an LM call failed in a way that makes the user's results unusable.

    Raised by the run's LM guard when a call still fails after the LM client's retries with a transient error
    (timeout, connection error, rate limit, 5xx) or an authentication/billing error. It derives from
    `BaseException` so that Fermi's per-example error handling, which scores a failed example 0 and goes on, does not
    swallow it: the user is recorded as failed (and retried on resume) instead of finishing with corrupted scores.

    Attributes:
        reason: What failed, with secrets removed.
        error_type: The name of the LM error's class.
    """

    def __init__(self, reason: str, error_type: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


class RunInterruptedError(BaseException):
    """Stops a user's work because the run is stopping (Ctrl-C, or a crash elsewhere in the run)."""
