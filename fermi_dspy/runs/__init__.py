"""Many-user runs: personalize thousands of users into a resumable run directory, within budgets, on threads or Ray.

```python
from fermi_dspy.runs import RunSettings, personalize_users

summary = personalize_users("hwang", run_dir="runs/hwang", task_lm="local", fermi={"num_iterations": 3},
                            settings=RunSettings(max_calls_per_user=200, max_workers=2))
```

Command line: `fermi-dspy personalize --data hwang --run-dir runs/hwang --dry-run` (or `python -m fermi_dspy.runs`).
The run directory's layout is described in `fermi_dspy.runs.layout`; budgets in `fermi_dspy.runs.budget`; the LM
guard (fail-fast on broken endpoints, per-call seeds) in `fermi_dspy.runs.guard`. Other per-user work plugs in as a
`UserJob` run by `run_user_jobs`. A finished run's programs are served by user id with `ProgramStore`.
"""

from fermi_dspy.runs.api import estimate_users, personalize_users
from fermi_dspy.runs.errors import (
    ManifestMismatchError,
    RayNotInstalledError,
    RunError,
    RunLockedError,
    UserAbortError,
)
from fermi_dspy.runs.estimate import RunEstimate
from fermi_dspy.runs.fermi_job import FermiJob
from fermi_dspy.runs.inputs import prepare_users
from fermi_dspy.runs.jobs import JobContext, JobOutput, UserData, UserJob, WorkEstimate
from fermi_dspy.runs.layout import RunDir, user_dir_name
from fermi_dspy.runs.lms import LMConfig, Secret
from fermi_dspy.runs.program_store import ProgramStore, RunInProgressError
from fermi_dspy.runs.runner import estimate_user_jobs, run_user_jobs
from fermi_dspy.runs.settings import DataSource, RunSettings
from fermi_dspy.runs.summary import RunSummary, UserFailure

__all__ = [
    "DataSource",
    "FermiJob",
    "JobContext",
    "JobOutput",
    "LMConfig",
    "ManifestMismatchError",
    "ProgramStore",
    "RayNotInstalledError",
    "RunDir",
    "RunError",
    "RunEstimate",
    "RunInProgressError",
    "RunLockedError",
    "RunSettings",
    "RunSummary",
    "Secret",
    "UserAbortError",
    "UserData",
    "UserFailure",
    "UserJob",
    "WorkEstimate",
    "estimate_user_jobs",
    "estimate_users",
    "personalize_users",
    "prepare_users",
    "run_user_jobs",
    "user_dir_name",
]
