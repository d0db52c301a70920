"""Speed and quality benchmarks start cold, as a new user would: a fresh process with an empty DSPy cache."""

import os
import subprocess
import sys
import tempfile


def rerun_cold(module: str) -> None:
    """Unless `DSPY_CACHEDIR` is set, run `python -m <module>` with this command's arguments again in a new process
    with an empty DSPy cache in a new temporary folder, and exit with its status (call it before importing dspy)."""
    if os.environ.get("DSPY_CACHEDIR"):
        return
    env = {**os.environ, "DSPY_CACHEDIR": tempfile.mkdtemp(prefix="fermi-cold-cache-"),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    raise SystemExit(subprocess.call([sys.executable, "-m", module, *sys.argv[1:]], env=env))
