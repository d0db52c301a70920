"""Fixtures for the run tests: hermetic DSPy cache, scripted LMs reset per test, SYNTHETIC users, a local Ray."""

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from fermi_dspy.runs import RunSettings
from fermi_dspy.runs.guard import clear_stop
from fermi_dspy.runs.lms import clear_worker_lms
from tests.runs import lms

REPO = Path(__file__).resolve().parents[2]
VOLATILE = ("timing", "attempts")
#: What an interrupted attempt leaves in a resumed user's budget record: what its attempts spent before this one.
EARLIER_ATTEMPTS = ("calls_in_failed_attempts", "earlier_attempts")


@pytest.fixture(autouse=True)
def _fresh_lms(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no cached LMs, no recorded calls, no stop request and a private DSPy cache dir."""
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path_factory.mktemp("dspy-cache")))
    clear_worker_lms()
    lms.reset()
    clear_stop()
    yield
    clear_worker_lms()
    lms.reset()
    clear_stop()


@pytest.fixture
def users_file(tmp_path: Path) -> Callable[..., Path]:
    """Write SYNTHETIC users in the Hwang format: users_file(count, extra_lines=(...))."""

    def write(count: int = 6, **kwargs: Any) -> Path:
        return lms.write_users_file(tmp_path / f"users-{count}.jsonl", count, **kwargs)

    return write


def run_kwargs(**overrides: Any) -> dict[str, Any]:
    """personalize_users arguments for the scripted LMs and small Fermi settings; overrides named like `RunSettings`
    fields go into its `settings`."""
    fields = {f.name for f in dataclasses.fields(RunSettings)}
    settings = {"display_progress": False, **{k: v for k, v in overrides.items() if k in fields}}
    kwargs: dict[str, Any] = {"task_lm": lms.TASK, "proposer_lm": lms.PROPOSER, "fermi": dict(lms.FERMI), **lms.SPLIT,
                              **{k: v for k, v in overrides.items() if k not in fields}}
    return {**kwargs, "settings": RunSettings(**settings)}


def user_results(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per user: result.json without its timing and attempt bookkeeping (an interrupted attempt makes the resumed one
    attempt 2, with the first one's calls charged), plus the program and details files, for comparing runs."""
    out = {}
    for folder in sorted((run_dir / "users").iterdir()):
        result_path = folder / "result.json"
        if not result_path.exists():
            continue
        result = json.loads(result_path.read_text())
        for key in VOLATILE:
            result.pop(key, None)
        for key in EARLIER_ATTEMPTS:
            result["budget"].pop(key, None)
        result["program.json"] = json.loads((folder / "program.json").read_text())
        result["details.json"] = json.loads((folder / "details.json").read_text())
        out[result["user_id"]] = result
    return out


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A local Ray instance on 2 CPUs whose workers can import the test LMs (started once, shut down at the end)."""
    ray = pytest.importorskip("ray")
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DSPY_CACHEDIR": str(tmp_path_factory.mktemp("ray-dspy-cache"))}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, logging_level="ERROR",
             log_to_driver=False)
    yield ray
    ray.shutdown()
