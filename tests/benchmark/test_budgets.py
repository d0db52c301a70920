"""Budgets that make DSPy's optimizers comparable to Fermi's."""

import random

import dspy
import pytest

from fermi_dspy.optimizer import split_examples
from programs.benchmark.budgets import copro_config, describe_budgets, fermi_budget, gepa_config, mipro_config
from programs.benchmark.settings import BenchmarkSettings


@pytest.mark.parametrize("n", range(2, 31))
def test_optimization_examples_match_fermis_own_split(n):
    examples = [dspy.Example(q=str(i)) for i in range(n)]
    optimization, _ = split_examples(examples, 0.2, random.Random(0))
    assert fermi_budget(BenchmarkSettings(n_train=n)).optimization_examples == len(optimization)


def test_budgets_follow_t_and_k():
    settings = BenchmarkSettings(n_train=10, num_iterations=3, num_candidates=3)
    fermi = fermi_budget(settings)
    assert (fermi.candidates, fermi.optimization_examples, fermi.task_calls, fermi.proposer_calls) == (9, 8, 72, 8)
    assert (copro_config(settings).breadth, copro_config(settings).depth) == (3, 3)
    assert (mipro_config(settings).num_candidates, mipro_config(settings).num_trials) == (9, 8)
    assert gepa_config(settings).max_metric_calls == 72
    assert copro_config(BenchmarkSettings(num_candidates=1)).breadth == 2  # COPRO's minimum breadth


def test_every_optimizer_configuration_says_why():
    described = describe_budgets(BenchmarkSettings())
    assert set(described) == {"fermi", "copro", "mipro", "gepa"}
    assert all(len(entry["why"]) > 20 for entry in described.values())
