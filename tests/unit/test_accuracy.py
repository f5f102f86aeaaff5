"""The accuracy harness ``shardmc.accuracy.compare`` on draws with known differences."""

import numpy as np
import pytest
from scipy.stats import norm

from shardmc.accuracy import compare, gaussian_w2, marginal_accuracy

S = 8_000


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.8], [0.8, 2.0]])
    return rng.multivariate_normal([1.0, -2.0], cov, size=S, method="cholesky")


def test_identical_draws_are_perfect(reference):
    c = compare(reference, reference)
    np.testing.assert_allclose(c.marginal_accuracy, 1.0, atol=1e-12)
    np.testing.assert_allclose(c.std_mean_error, 0.0, atol=1e-12)
    np.testing.assert_allclose(c.sd_ratio, 1.0, atol=1e-12)
    assert c.correlation_error < 1e-12 and c.mahalanobis < 1e-12 and c.gaussian_w2 < 1e-6
    assert c.passes()


def test_shift_gives_known_standardised_error(reference):
    """Shifting coordinate 0 by 0.5 sd: standardised error 0.5, Mahalanobis
    0.5 / sqrt(1 - rho^2) (rho = 0.8 / sqrt(2)), W2 0.5 (standardised units), and the
    accuracy of two unit normals 0.5 sd apart, 2 (1 - Phi(0.25)) = 0.803 (KDE smoothing
    moves it by < 0.01)."""
    shifted = reference + np.array([0.5 * reference[:, 0].std(ddof=1), 0.0])
    c = compare(shifted, reference)
    assert c.std_mean_error[0] == pytest.approx(0.5, abs=1e-9)
    assert c.std_mean_error[1] == pytest.approx(0.0, abs=1e-12)
    rho = 0.8 / np.sqrt(2.0)
    sample_rho = np.corrcoef(reference.T)[0, 1]
    assert c.mahalanobis == pytest.approx(0.5 / np.sqrt(1 - sample_rho**2), rel=1e-9)
    assert c.mahalanobis == pytest.approx(0.5 / np.sqrt(1 - rho**2), rel=0.05)
    assert c.gaussian_w2 == pytest.approx(0.5, abs=1e-6)
    assert c.marginal_accuracy[0] == pytest.approx(2 * (1 - norm.cdf(0.25)), abs=0.01)
    assert c.marginal_accuracy[1] == pytest.approx(1.0, abs=1e-12)
    assert not c.passes()


def test_scaled_draws_give_sd_ratio_and_w2(reference):
    mean = reference.mean(0)
    wide = mean + 1.2 * (reference - mean)
    c = compare(wide, reference)
    np.testing.assert_allclose(c.sd_ratio, 1.2, rtol=1e-12)
    assert c.correlation_error < 1e-12
    # W2 between N(0, R) and N(0, 1.44 R) in sd units: 0.2 sqrt(tr R) = 0.2 sqrt(2)
    assert c.gaussian_w2 == pytest.approx(0.2 * np.sqrt(2.0), rel=1e-6)


def test_independent_draws_score_within_monte_carlo_error(reference):
    """Fresh draws from the same law: errors of order 1/sqrt(S); KDE accuracy ~0.98."""
    rng = np.random.default_rng(1)
    other = rng.multivariate_normal([1.0, -2.0], [[1.0, 0.8], [0.8, 2.0]], size=S,
                                    method="cholesky")
    c = compare(other, reference)
    assert np.all(np.abs(c.std_mean_error) < 5 * np.sqrt(2 / S))
    assert np.all(np.abs(c.sd_ratio - 1) < 5 * np.sqrt(1 / S))
    assert np.all(c.marginal_accuracy > 0.97) and c.passes()


def test_named_dicts_compare_shared_names_only():
    rng = np.random.default_rng(2)
    ref = {"beta": rng.normal(size=(S, 3)), "sigma": np.exp(rng.normal(size=S)),
           "extra": rng.normal(size=S)}
    draws = {"beta": ref["beta"] + 0.1, "sigma": ref["sigma"]}
    c = compare(draws, ref)
    assert c.names == ["beta[0]", "beta[1]", "beta[2]", "sigma"]
    np.testing.assert_allclose(c.std_mean_error[:3], 0.1 / ref["beta"].std(0, ddof=1))
    report = c.to_dict()
    assert set(report["per_coordinate"]) == set(c.names) and "passes" in report


def test_helpers():
    assert gaussian_w2(np.zeros(1), np.eye(1), np.ones(1), np.eye(1)) == pytest.approx(1.0)
    x = np.random.default_rng(3).normal(size=5000)
    assert marginal_accuracy(x, x) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="coordinates"):
        compare(np.zeros((10, 2)), np.zeros((10, 3)))


def test_the_old_module_name_still_imports_with_a_deprecation_warning():
    import importlib
    import sys

    import shardmc.accuracy

    sys.modules.pop("shardmc.validate", None)
    with pytest.warns(DeprecationWarning, match="renamed shardmc.accuracy"):
        old = importlib.import_module("shardmc.validate")
    assert old.compare is shardmc.accuracy.compare
