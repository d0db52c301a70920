"""The benchmark: Fermi against every baseline and DSPy optimizer on the same real users, with ablations and costs.

Run it with `python -m programs.benchmark run ...` (or `fermi-dspy bench run ...`); see `programs.benchmark.cli`.
"""

from programs.benchmark.report import BenchmarkReport
from programs.benchmark.runner import run_benchmark
from programs.benchmark.settings import METHOD_ORDER, BenchmarkSettings

__all__ = ["METHOD_ORDER", "BenchmarkReport", "BenchmarkSettings", "run_benchmark"]
