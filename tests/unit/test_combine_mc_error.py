"""Monte Carlo error of the combined mean: the jackknife against the known answer.

Shard draws are exact (iid) draws from Gaussian sub-posteriors whose centres scatter by a
shard sd, as in CMC; the combined mean's true error is then known, replicate by
replicate, and its sd follows sqrt(((d + 1)(K - 1) / K + 1) / S) posterior sds
(weights' error times the shard scatter, plus the mean's own error; see
tests/unit/test_combiners.py).
"""

import numpy as np
import pytest

from shardmc.combine import combine
from shardmc.combine.mc_error import (
    COMBINE_MC_ERROR_TARGET,
    COMBINE_MC_ERROR_WARN,
    batch_labels,
    combined_mean_error,
    draws_for_error,
    jackknife_mean_error,
)
from shardmc.core.diagnosis import _mc_error_issues

K, S, D, REPLICATES = 8, 1000, 5, 100


def _shards(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws (K, S, d) of N(mu_k, K I), mu_k ~ N(0, K I); the product's mean is mean(mu)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, np.sqrt(K), (K, D))
    return mu[:, None, :] + np.sqrt(K) * rng.normal(size=(K, S, D)), mu.mean(axis=0)


def _consensus(z: np.ndarray) -> np.ndarray:
    return combine(z, "consensus").draws


def test_jackknife_matches_the_true_error_and_the_theory():
    errors, estimates = [], []
    for r in range(REPLICATES):
        draws, truth = _shards(r)
        errors.append(_consensus(draws).mean(axis=0) - truth)
        estimates.append(jackknife_mean_error(draws, _consensus, num_chains=2))
    actual = np.sqrt(np.mean(np.square(errors)))
    jack = np.sqrt(np.mean(np.square(estimates)))
    theory = np.sqrt(((D + 1) * (K - 1) / K + 1) / S)
    # The rms of 500 squared N(0, s^2) errors has relative sd 1 / sqrt(2 * 500) = 0.032;
    # 5 of those is 0.16. The jackknife's own scatter averages out over 500 values.
    assert abs(actual / theory - 1) < 0.16
    assert abs(jack / actual - 1) < 0.16


def test_batches_stay_inside_chains():
    labels = batch_labels(num_chains=4, draws_per_chain=100)
    assert labels.max() + 1 == 20
    per_chain = labels.reshape(4, 100)
    assert len(np.unique(per_chain)) == 20
    assert all(len(set(row)) == 5 for row in per_chain)  # 5 batches in each chain
    assert np.all(np.diff(per_chain, axis=1) >= 0)  # contiguous
    assert batch_labels(2, 15).max() == 1  # at least MIN_BATCH_DRAWS per batch


def test_error_falls_as_one_over_root_draws():
    assert draws_for_error(1000, 2 * COMBINE_MC_ERROR_TARGET) == 4000
    assert draws_for_error(1000, COMBINE_MC_ERROR_TARGET / 2) == 250


def test_record_and_warning():
    draws, _ = _shards(0)
    # 80 draws per shard: the largest of the 5 estimated errors measured 0.19 sd (sd 0.025,
    # min 0.14 over 40 seeds), well above the warning level (at 200 draws it was 0.12 with
    # one seed in eight below 0.1)
    draws = draws[:, :80]
    combined = _consensus(draws)
    rec = combined_mean_error(draws.reshape(K, 2, 40, D), combined, "consensus",
                              _consensus, [f"x[{j}]" for j in range(D)])
    assert rec["draws_per_shard"] == 80 and rec["batches"] == 8
    assert COMBINE_MC_ERROR_WARN < max(rec["sd_units"]) < 0.4
    assert combined_mean_error(draws[:, None], combined, "semiparametric", _consensus,
                               ["x"] * D) is None
    (issue,) = _mc_error_issues({"combine_mc_error": rec})
    assert issue.kind == "mc_error" and "draws per shard" in issue.message
    quiet = {**rec, "sd_units": [COMBINE_MC_ERROR_WARN / 2] * D}
    assert _mc_error_issues({"combine_mc_error": quiet}) == []


@pytest.mark.parametrize("method", ["gaussian", "robust_consensus", "simple_average"])
def test_other_combiners_have_similar_errors(method):
    draws, _ = _shards(1)
    err = jackknife_mean_error(draws, lambda z: combine(z, method, seed=0).draws, 2)
    assert np.all(err < 0.2) and np.all(err > 0.02)
