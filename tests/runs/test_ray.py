"""The Ray engine: same run directory, same per-user results as local threads; Ray stays optional."""

import builtins
import json

import pytest

from fermi_dspy.runs import RayNotInstalledError, personalize_users
from tests.runs.conftest import run_kwargs, user_results


@pytest.mark.ray
def test_ray_on_two_local_cpus_gives_the_same_results_as_threads(ray_cluster, users_file, tmp_path):
    data = users_file(6)
    threads = personalize_users("hwang", data_path=data, run_dir=tmp_path / "threads", **run_kwargs(max_workers=2))
    ray = personalize_users("hwang", data_path=data, run_dir=tmp_path / "ray", **run_kwargs(engine="ray"))
    assert threads.done == ray.done == 6
    assert user_results(tmp_path / "ray") == user_results(tmp_path / "threads")
    workers = {json.loads(p.read_text())["timing"]["worker"] for p in (tmp_path / "ray").glob("users/*/result.json")}
    assert all(not w.endswith(f":{__import__('os').getpid()}") for w in workers)  # they ran in Ray workers
    started = [e for e in map(json.loads, (tmp_path / "ray" / "events.jsonl").read_text().splitlines())
               if e["event"] == "user_started"]
    assert {e["engine"] for e in started} == {"ray"}


@pytest.mark.ray
def test_ray_run_respects_the_run_cap_like_threads_and_resumes_on_threads(ray_cluster, users_file, tmp_path):
    data = users_file(5)
    caps = {"max_calls_per_user": 15, "max_calls_per_run": 40}
    on_ray = personalize_users("hwang", data_path=data, run_dir=tmp_path / "ray",
                               **run_kwargs(engine="ray", max_workers=2, **caps))
    assert on_ray.usage["calls"] <= 40 and on_ray.done == 3 and on_ray.not_started == 2
    personalize_users("hwang", data_path=data, run_dir=tmp_path / "threads", **run_kwargs(**caps))
    assert user_results(tmp_path / "ray") == user_results(tmp_path / "threads")

    more = personalize_users("hwang", data_path=data, run_dir=tmp_path / "ray",
                             **run_kwargs(engine="threads", max_calls_per_user=15, max_calls_per_run=75))
    assert more.done == 5 and more.already_done == 3 and more.usage["calls"] <= 75


def test_without_ray_the_error_names_the_extra(users_file, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(RayNotInstalledError, match=r"pip install 'fermi-dspy\[ray\]'"):
        personalize_users("hwang", data_path=users_file(1), run_dir=tmp_path / "run", **run_kwargs(engine="ray"))
