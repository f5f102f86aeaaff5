"""The engine against known answers: the exact conjugate posterior and a 1-D quadrature.

Monte Carlo error budget: every fit keeps S = 4 chains x 4000 draws. For a near-Gaussian
target NUTS gives ESS of order S (measured: bulk ESS 0.9-1.3 S per shard), so the standard
error of a mean is about sd / sqrt(16000) = 0.008 sd, of an sd ratio about
1 / sqrt(2 * 16000) = 0.6 %, and of a correlation at most (1 - rho^2) / sqrt(16000) = 0.008.
The ``gaussian`` combiner draws afresh from moments estimated from the shards, which adds a
second error of the same size (x sqrt(2)). The tolerances below (0.1 sd, [0.9, 1.1], 0.05)
are therefore >= 4.4 standard errors (the maximum over 5 means and 10 correlations needs
the margin): a failure is a real error.
"""

import numpy as np
import pytest

import shardmc
from shardmc.examples import (
    conjugate_posterior,
    linear_regression_data,
    linear_regression_known_noise,
    normal_scale,
    normal_scale_posterior_grid,
)

#: Shards run in this process: the accuracy under test does not depend on where they run,
#: and a pool would compile every program once more per worker (fit's default, "auto",
#: picks one for these sizes).
SAMPLER = {"num_chains": 4, "num_warmup": 400, "num_samples": 4000, "adaptive_sampling": False,
           "backend": "sequential"}


@pytest.fixture(scope="module")
def regression():
    data = linear_regression_data(20_000, 5, seed=11, correlation=0.6)
    return data, conjugate_posterior(data["x"], data["y"])


@pytest.mark.parametrize("k", [1, 4, 16])
@pytest.mark.parametrize("method", ["consensus", "gaussian"])
def test_conjugate_regression_matches_exact_posterior(regression, k, method):
    data, (mean, cov) = regression
    post = shardmc.fit(linear_regression_known_noise, data, k, seed=3, method=method, **SAMPLER)
    beta = post.samples["beta"]
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(beta.mean(0) - mean) / sd < 0.1), (beta.mean(0) - mean) / sd
    ratio = beta.std(0, ddof=1) / sd
    assert np.all((ratio > 0.9) & (ratio < 1.1)), ratio
    exact_corr = cov / np.outer(sd, sd)
    assert np.max(np.abs(np.corrcoef(beta.T) - exact_corr)) < 0.05


@pytest.fixture(scope="module")
def scale_problem():
    """2 000 points in K = 50 shards: 40 points per shard give skewed sub-posteriors."""
    y = np.random.default_rng(0).normal(0.0, 1.0, size=2_000)
    grid = np.linspace(0.5, 1.6, 20_001)
    density = normal_scale_posterior_grid(y, grid)
    mean = np.trapezoid(grid * density, grid)
    sd = np.sqrt(np.trapezoid((grid - mean) ** 2 * density, grid))
    return y, mean, sd


def test_full_data_nuts_matches_quadrature(scale_problem):
    y, mean, sd = scale_problem
    sigma = shardmc.fit(normal_scale, {"y": y}, 1, seed=0, **SAMPLER).samples["sigma"]
    assert abs(sigma.mean() - mean) / sd < 0.1
    assert 0.9 < sigma.std(ddof=1) / sd < 1.1


def test_positive_parameter_combined_in_unconstrained_space(scale_problem):
    """Consensus on log(sigma) stays within 0.2 posterior sd of the exact answer (and of
    full-data NUTS, checked above); the same combiner on sigma itself is visibly biased,
    because the shards' sigma-space sub-posteriors are skewed: this is why shardmc
    combines in unconstrained space by default."""
    y, mean, sd = scale_problem
    errors = {}
    for space in ("unconstrained", "constrained"):
        post = shardmc.fit(normal_scale, {"y": y}, 50, seed=0, space=space, **SAMPLER)
        errors[space] = (post.samples["sigma"].mean() - mean) / sd
    assert abs(errors["unconstrained"]) < 0.2, errors
    assert abs(errors["constrained"]) > 0.4, errors
    assert abs(errors["constrained"]) > 2 * abs(errors["unconstrained"]), errors
