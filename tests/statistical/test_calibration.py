"""Simulation-based calibration of a CMC fit: over datasets drawn from the prior, the
posterior's central 50 % and 90 % intervals must cover the true parameter at their
nominal rates (Cook, Gelman & Rubin 2006; Talts et al. 2018)."""

import numpy as np
import pytest

import shardmc
from shardmc.examples import CONJUGATE_NOISE_SD, CONJUGATE_PRIOR_SD, linear_regression_known_noise

NUM_DATASETS = 200
NUM_POINTS = 80
NUM_FEATURES = 2
NUM_SHARDS = 8
LEVELS = (0.5, 0.9)
SAMPLER = {"num_warmup": 150, "num_samples": 400, "num_chains": 1,
           "adaptive_sampling": False, "progress": False}


def simulate(seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """beta from the prior, then data from the model."""
    rng = np.random.default_rng(seed)
    beta = rng.normal(0.0, CONJUGATE_PRIOR_SD, NUM_FEATURES)
    x = rng.normal(size=(NUM_POINTS, NUM_FEATURES))
    y = x @ beta + rng.normal(0.0, CONJUGATE_NOISE_SD, NUM_POINTS)
    return beta, {"x": x, "y": y}


@pytest.mark.slow
def test_interval_coverage_matches_nominal():
    """K = 8 shards of 10 points, consensus in unconstrained space. For each level p the
    coverage over N datasets is Binomial(N, p) / N when the posterior is calibrated (the
    coefficients are nearly independent, each tested on its own), so it must lie within
    3 sd = 3 sqrt(p (1 - p) / N) of p: +-0.106 at 50 %, +-0.064 at 90 % with N = 200.
    (Empirical quantiles of 400 draws shrink the intervals by ~1/400: negligible.)
    Measured: 50 % -> [0.455, 0.41], 90 % -> [0.90, 0.895]; the exact conjugate posterior
    covers [0.50, 0.44] and [0.905, 0.90] on the same data sets, so the low 0.41 is these
    data sets' luck (400 other data sets: [0.51, 0.52] and [0.93, 0.91])."""
    hits = {p: np.zeros((NUM_DATASETS, NUM_FEATURES), dtype=bool) for p in LEVELS}
    for i in range(NUM_DATASETS):
        beta, data = simulate(1000 + i)
        post = shardmc.fit(linear_regression_known_noise, data, NUM_SHARDS, seed=i, **SAMPLER)
        draws = post.samples["beta"]
        for p in LEVELS:
            lo, hi = np.quantile(draws, [(1 - p) / 2, (1 + p) / 2], axis=0)
            hits[p][i] = (lo <= beta) & (beta <= hi)
    for p in LEVELS:
        coverage = hits[p].mean(axis=0)
        band = 3.0 * np.sqrt(p * (1 - p) / NUM_DATASETS)
        print(f"{p:.0%} intervals: coverage {coverage} (nominal {p}, band +-{band:.3f})")
        assert np.all(np.abs(coverage - p) <= band), (p, coverage, band)
