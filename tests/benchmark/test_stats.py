"""Bootstrap confidence intervals on known cases, wins/ties/losses and paired differences."""

import math

import pytest

from programs.stats import bootstrap_ci, paired_difference, win_tie_loss


def test_constant_values_have_a_zero_width_interval():
    ci = bootstrap_ci([0.4] * 12)
    assert (ci.mean, ci.low, ci.high, ci.n) == (pytest.approx(0.4), pytest.approx(0.4), pytest.approx(0.4), 12)


def test_interval_matches_the_normal_approximation_on_a_known_case():
    # 100 users, half at 0 and half at 1: mean 0.5, standard error 0.5 / sqrt(100) = 0.05, so about [0.40, 0.60].
    ci = bootstrap_ci([0.0] * 50 + [1.0] * 50, seed=3)
    assert ci.mean == pytest.approx(0.5)
    assert ci.low == pytest.approx(0.5 - 1.96 * 0.05, abs=0.012)
    assert ci.high == pytest.approx(0.5 + 1.96 * 0.05, abs=0.012)


def test_interval_is_seeded_and_brackets_the_mean():
    values = [0.1, 0.35, 0.4, 0.55, 0.2, 0.3]
    first, again = bootstrap_ci(values, seed=7), bootstrap_ci(values, seed=7)
    assert first == again
    assert min(values) <= first.low <= first.mean <= first.high <= max(values)


def test_one_value_and_no_values():
    assert bootstrap_ci([0.25]).low == bootstrap_ci([0.25]).high == 0.25
    assert math.isnan(bootstrap_ci([]).mean) and bootstrap_ci([]).n == 0


def test_wins_ties_losses_count_only_common_users():
    method = {"a": 0.5, "b": 0.3, "c": 0.3, "d": 0.9}
    reference = {"a": 0.4, "b": 0.3, "c": 0.35}
    result = win_tie_loss(method, reference)
    assert (result.wins, result.ties, result.losses) == (1, 1, 1)
    assert str(result) == "1/1/1"


def test_paired_difference_is_the_mean_of_per_user_differences():
    difference = paired_difference({"a": 0.5, "b": 0.2, "x": 1.0}, {"a": 0.3, "b": 0.3})
    assert difference.mean == pytest.approx(0.05) and difference.n == 2
    assert difference.low <= difference.mean <= difference.high


def test_claims_compare_fermi_with_the_best_baseline_and_its_ablations():
    from programs.benchmark.claims import claims
    from programs.benchmark.methods import MethodResult

    def result(user, method, accuracy):
        return MethodResult(user, method, "ok", accuracy=accuracy, n_test=20)

    results = [result(u, m, a) for u in ("u1", "u2", "u3") for m, a in
               (("fermi", 0.5), ("opro", 0.3), ("gepa", 0.45), ("floor", 0.4), ("fermi_best", 0.5))]
    found = {(c.better, c.worse): c for c in claims(results)}
    best = found[("fermi", "gepa")]  # gepa has the best mean among the baselines
    assert best.difference.mean == pytest.approx(0.05) and best.verdict.startswith("yes")
    assert found[("fermi", "opro")].verdict.startswith("yes")
    assert found[("fermi", "fermi_best")].verdict.startswith("not distinguishable")
    assert found[("opro", "floor")].verdict.startswith("no, the reverse")
    assert ("fermi", "fermi_no_profile") not in found  # not run: no claim
    assert "+5.0 points [+5.0, +5.0] over 3 users" in best.line()
