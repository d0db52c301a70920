"""The one root of fermi-dspy's errors: `except fermi_dspy.FermiError` catches every error the library raises on
purpose. Each error also keeps the built-in base that says what kind of mistake it is (`ValueError` for bad input,
`ImportError` for a missing extra, ...), so code written against those keeps working.

    FermiError
    ├── DataError (ValueError)                  fermi_dspy.data: bad records, unreadable or missing data
    │   └── DataNotFoundError (FileNotFoundError)
    ├── LocalLMError (RuntimeError)             fermi_dspy.lm: the embedded local LM, its models and server
    │   ├── UnknownModelError (ValueError)
    │   ├── LMSpecError (ValueError)
    │   ├── ModelFetchError
    │   ├── ChecksumMismatchError
    │   ├── EngineNotInstalledError (ImportError)
    │   └── ServerError
    ├── RunError (RuntimeError)                 fermi_dspy.runs: a many-user run cannot start or go on
    │   ├── ManifestMismatchError (ValueError)
    │   ├── RunLockedError
    │   └── RayNotInstalledError (ImportError)
    └── BudgetExhaustedError (RuntimeError)     fermi_dspy.accounting: an LM call the budget does not allow

Two signals of many-user runs are not errors and derive from `BaseException`, so that per-example error handling
never swallows them: `fermi_dspy.runs.UserAbortError` (a user's LM endpoint stays broken) and
`RunInterruptedError` (the run is stopping).
"""


class FermiError(Exception):
    """The base class of every error fermi-dspy raises on purpose; its message says what went wrong and the fix."""


__all__ = ["FermiError"]
