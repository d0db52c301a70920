"""The benchmark: Fermi against every baseline and DSPy optimizer on the same real users, with ablations and costs.

Run it with `python -m programs.benchmark run ...` (or `fermi-dspy bench run ...`); see `programs.benchmark.cli`.
It is a `fermi_dspy.runs.UserJob` (`programs.benchmark.job`).
"""

from programs.benchmark.job import BenchmarkJob, rebuild_report, run_benchmark
from programs.benchmark.report import BenchmarkReport
from programs.benchmark.settings import METHOD_ORDER, BenchmarkSettings

__all__ = ["METHOD_ORDER", "BenchmarkJob", "BenchmarkReport", "BenchmarkSettings", "rebuild_report", "run_benchmark"]
