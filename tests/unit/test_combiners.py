"""Combiners on synthetic Gaussian (and one skewed) sub-posteriors with known products.

No NUTS: shard draws are exact draws from known sub-posteriors, so every tolerance below
is Monte Carlo error of the combination, derived in the comments, times a safety factor.
"""

import numpy as np
import pytest

from shardmc.accuracy import marginal_accuracy
from shardmc.combine import (
    COMBINERS,
    accumulate_moments,
    choose_method,
    combine,
    detect_modes,
    mean_covariance,
)
from shardmc.combine.covariance import laplace_shrinkage, shard_covariances
from shardmc.errors import ShardMCInputError

K, S, D, RHO = 10, 10_000, 10, 0.9
#: Safety factor on every Monte Carlo standard error below (5 sigma: a fixed-seed test
#: that would still pass for almost any seed).
Z = 5.0


def equicorrelation(d: int, rho: float) -> np.ndarray:
    return np.full((d, d), rho) + (1.0 - rho) * np.eye(d)


def mvn(rng: np.random.Generator, mean, cov, size=None) -> np.ndarray:
    """Normal draws through the Cholesky factor: the same on every CPU up to the last bits.
    (The default SVD factor is not unique where eigenvalues repeat, as an equicorrelation's
    do, so LAPACK kernels differ in whole eigenvectors and the draws of one seed change.)"""
    return rng.multivariate_normal(mean, cov, size=size, method="cholesky")


def gaussian_shards(seed: int, k: int = K, s: int = S, d: int = D, rho: float = RHO,
                    hetero: bool = True):
    """Exact Gaussian sub-posteriors and their exact product.

    Shard k is N(m_k, C_k), C_k = K D_k R D_k with R the rho-equicorrelation and D_k
    per-coordinate scales in [0.6, 1.6] (heterogeneous shards, so diagonal weights are
    not proportional across shards); m_k ~ N(0, C_k), as shard means scatter in CMC.
    Returns draws (K, S, d), the product's mean and covariance, and the shard parameters.
    """
    rng = np.random.default_rng(seed)
    base = equicorrelation(d, rho)
    scales = rng.uniform(0.6, 1.6, (k, d)) if hetero else np.ones((k, d))
    covs = k * base[None] * scales[:, :, None] * scales[:, None, :]
    means = np.stack([mvn(rng, np.zeros(d), c) for c in covs])
    draws = np.stack([mvn(rng, m, c, s) for m, c in zip(means, covs, strict=True)])
    mean, cov = product(means, covs)
    return draws, mean, cov, means, covs


def product(means: np.ndarray, covs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prec = np.linalg.inv(covs)
    cov = np.linalg.inv(prec.sum(axis=0))
    return cov @ np.einsum("kij,kj->i", prec, means), cov


def errors(draws: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> tuple[float, float, float]:
    """Max |standardised mean error|, max |sd ratio - 1|, max |correlation error|."""
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    return (float(np.max(np.abs((draws.mean(0) - mean) / sd))),
            float(np.max(np.abs(draws.std(0, ddof=1) / sd - 1.0))),
            float(np.max(np.abs(np.corrcoef(draws.T) - corr))))


# Monte Carlo error of a combination of K shards of S exact draws in d dimensions:
# - mean: the mean of S combined draws has sd 1/sqrt(S) (in posterior sds); the precision
#   weights are estimated from S draws per shard, and their error delta W_k acts on shard
#   means that scatter by one shard sd: in posterior sds this adds variance (d + 1) / S
#   (whitened: sum_k E_k x_k / K with Var(E_ij) = (1 + delta_ij) / S and |x_k|^2 ~ d).
MEAN_TOL = Z * np.sqrt((D + 2) / S)
# - sd: a sample sd has relative sd 1/sqrt(2S); the weights' error cancels to first order
#   in the consensus covariance and adds relative variance ~ (d + 1) / (K S) to the product.
SD_TOL = Z * np.sqrt(1 / (2 * S) + (D + 1) / (K * S))
# - correlation: a sample correlation has sd (1 - rho^2) / sqrt(S) <= 1 / sqrt(S), plus the
#   same weight term as the sd.
CORR_TOL = Z * np.sqrt(1 / S + (D + 1) / (K * S))


@pytest.fixture(scope="module")
def correlated():
    return gaussian_shards(seed=11)


@pytest.mark.parametrize("method", ["consensus", "gaussian", "hierarchical"])
def test_full_covariance_combiners_recover_correlated_gaussian(correlated, method):
    draws, mean, cov, *_ = correlated
    mean_err, sd_err, corr_err = errors(combine(draws, method, seed=3).draws, mean, cov)
    assert mean_err < MEAN_TOL
    assert sd_err < SD_TOL
    assert corr_err < CORR_TOL


@pytest.mark.parametrize("method", ["consensus", "gaussian"])
def test_diagonal_weights_are_visibly_worse_on_correlations(correlated, method):
    """Diagonal weights ignore the rho = 0.9 correlations: with shards of different shapes
    the combined correlations (and here means and sds) miss by far more than MC error.
    The diagonal Gaussian product has no correlation at all."""
    draws, mean, cov, *_ = correlated
    full = errors(combine(draws, method, seed=3).draws, mean, cov)
    diag = errors(combine(draws, method, seed=3, diagonal=True).draws, mean, cov)
    assert diag[2] > 2 * CORR_TOL and diag[2] > 5 * full[2]
    assert diag[0] > MEAN_TOL  # the mean is also off: weights ignore the shards' shapes


def test_simple_average_exact_only_for_equal_shards():
    """Equal shard covariances: the draw-wise average is the exact product. Heterogeneous
    shards: it gives them the wrong weights, well outside MC error."""
    draws, mean, cov, *_ = gaussian_shards(seed=5, hetero=False)
    mean_err, sd_err, corr_err = errors(combine(draws, "simple_average").draws, mean, cov)
    # no estimated weights: MC error is that of S draws (mean 1/sqrt(S), sd 1/sqrt(2S)).
    assert mean_err < Z / np.sqrt(S) and sd_err < Z / np.sqrt(2 * S) and corr_err < CORR_TOL
    draws, mean, cov, *_ = gaussian_shards(seed=5, hetero=True)
    assert errors(combine(draws, "simple_average").draws, mean, cov)[0] > 3 * MEAN_TOL


def test_swiss_keeps_product_moments_and_pools_draws(correlated):
    draws, mean, cov, *_ = correlated
    res = combine(draws, "swiss")
    assert res.draws.shape == (K * S, D)
    mean_err, sd_err, corr_err = errors(res.draws, mean, cov)
    # the mapped draws have exactly the estimated product moments: the product's MC error
    assert mean_err < MEAN_TOL and sd_err < SD_TOL and corr_err < CORR_TOL


def test_robust_consensus_downweights_two_outlier_shards():
    """20 shards, 2 of them shifted by 8 shard sds in every coordinate. Robust stays
    within 0.2 posterior sd of the clean answer (the exact product of the 18 clean shards);
    plain consensus is pulled ~2/20 x 8 shard sds = 3.6 posterior sds away. MC error of
    the robust mean is sqrt((d + 2) / S) = 0.035 sd, so 0.2 is ~6 sigma."""
    k = 20
    draws, _, _, means, covs = gaussian_shards(seed=21, k=k, hetero=False)
    clean_mean, clean_cov = product(means[2:], covs[2:])
    shard_sd = np.sqrt(np.diag(covs[0]))
    draws[:2] += 8.0 * shard_sd
    sd = np.sqrt(np.diag(clean_cov))
    robust = combine(draws, "robust_consensus")
    plain = combine(draws, "consensus")
    assert np.max(np.abs(robust.draws.mean(0) - clean_mean) / sd) < 0.2
    assert np.min(np.abs(plain.draws.mean(0) - clean_mean) / sd) > 1.0
    w = np.asarray(robust.info["weights"])
    assert robust.info["outliers"] == [0, 1]  # reported, not dropped
    assert np.all(w[:2] > 0) and np.all(w[:2] < 1e-3) and np.all(w[2:] == 1.0)
    assert robust.info["prior_power"] == pytest.approx((w.sum()) / k)
    assert choose_method(draws)[0] == "robust_consensus"


def test_robust_consensus_leaves_clean_shards_alone(correlated):
    draws = correlated[0]
    res = combine(draws, "robust_consensus")
    assert res.info["outliers"] == [] and res.info["prior_power"] == 1.0
    np.testing.assert_array_equal(res.draws, combine(draws, "consensus").draws)
    assert choose_method(draws)[0] == "consensus"
    assert combine(draws, "auto").method == "consensus"


@pytest.mark.parametrize(("shrinkage", "laplace"),
                         [("auto", False), ("pooled", False), ("auto", True)])
def test_hierarchical_equals_one_pass_gaussian_product(shrinkage, laplace):
    """2 000 shards streamed 64 at a time: same moments and draws as the one-pass product,
    up to summation order (1e-10). Pooled shrinkage takes a first pass for the pooled
    covariance shape; Laplace targets are sliced with the chunks."""
    rng = np.random.default_rng(2)
    k, s, d = 2000, 200, 4
    corr = equicorrelation(d, 0.6)
    draws = rng.normal(size=(k, s, d)) @ np.linalg.cholesky(corr).T
    draws += rng.normal(size=(k, 1, d))
    opts = {"shrinkage": shrinkage}
    if laplace:
        opts["laplace"] = np.linalg.inv(corr)[None] * rng.uniform(0.8, 1.2, (k, 1, 1))
    one = combine(draws, "gaussian", seed=9, **opts)
    hier = combine(draws, "hierarchical", seed=9, chunk_size=64, **opts)
    np.testing.assert_allclose(hier.info["mean"], one.info["mean"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(hier.info["cov"], one.info["cov"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(hier.draws, one.draws, rtol=0, atol=1e-10)
    # streaming from any re-readable source (e.g. shard files), one chunk in memory
    chunks = lambda: (draws[i:i + 500] for i in range(0, k, 500))  # noqa: E731
    if laplace:
        return
    streamed = accumulate_moments(chunks(), shrinkage=shrinkage,
                                  pooled=mean_covariance(chunks(), shrinkage))
    assert streamed[2] == k
    np.testing.assert_allclose(np.linalg.solve(streamed[0], streamed[1]), one.info["mean"],
                               rtol=0, atol=1e-10)


def test_weight_noise_matches_its_derivation_and_pooling_cuts_it():
    """Over 16 replications of 10 equal-shaped shards (S = 2000, d = 10), the mean squared
    error of the consensus mean, whitened by the exact posterior covariance, is
    ~(d + 2) / S (the MEAN_TOL derivation; checked within a factor 2), and pooled shrinkage
    removes most of the weight part of it. Whitened, one replication's 10 errors are
    independent: measured over 48 seeds, S x MSE / (d + 2) has mean 0.89 (sd 0.42) without
    shrinkage and 0.14 (sd 0.08) pooled, so the 16-seed means sit 3.7 sds above the lower
    bound 0.5 and their ratio (~0.16) far below 0.6. (Unwhitened, the coordinates'
    correlation 0.9 leaves ~1 effective error per seed and a heavy-tailed MSE.)"""
    s, mse = 2000, {"none": [], "pooled": []}
    for seed in range(16):
        draws, mean, cov, *_ = gaussian_shards(seed=seed, s=s, hetero=False)
        chol = np.linalg.cholesky(cov)
        for sh in mse:
            err = np.linalg.solve(chol, combine(draws, "consensus", shrinkage=sh).draws.mean(0)
                                  - mean)
            mse[sh].append(np.mean(err**2))
    none, pooled = np.mean(mse["none"]), np.mean(mse["pooled"])
    assert 0.5 * (D + 2) / s < none < 2.0 * (D + 2) / s
    assert pooled < 0.6 * none


def test_laplace_targets_remove_the_weight_noise():
    """Shrunk toward the shards' exact precisions (the Laplace precisions of Gaussian
    shards), heterogeneous correlated shards (S = 2000, d = 10) lose the weight part of
    the mean's MC error: MSE ~1/S instead of ~d/S. Measured over 40 seeds, S x MSE has
    mean 1.07 (sd 0.94) with Laplace targets and 10.6 (sd 7.9) with sample weights (one
    dataset's 10 coordinates are correlated, so the per-seed MSE is heavy-tailed). Means
    over 16 seeds have sds 0.23 and 2.0: the bounds 2/S and 4/S sit 4 and 3.3 sds away."""
    s, mse = 2000, {"sample": [], "laplace": []}
    for seed in range(16):
        draws, mean, cov, _, covs = gaussian_shards(seed=seed, s=s)
        sd = np.sqrt(np.diag(cov))
        for name, opts in (("sample", {}), ("laplace", {"laplace": np.linalg.inv(covs)})):
            for method in ("consensus", "gaussian", "robust_consensus"):
                res = combine(draws, method, seed=seed, **opts)
                if method == "consensus":
                    err = (res.draws.mean(0) - mean) / sd
                    mse[name].append(np.mean(err**2))
                assert res.draws.shape[1] == D
    assert np.mean(mse["laplace"]) < 2.0 / s
    assert np.mean(mse["sample"]) > 4.0 / s


def test_laplace_target_ignored_where_not_positive_definite(correlated):
    draws, *_, covs = correlated
    bad = np.linalg.inv(covs)
    bad[3] = -bad[3]
    bad[5, 0, 0] = np.nan
    shrunk, lam = laplace_shrinkage(draws, bad)
    assert lam[3] == 0 and lam[5] == 0 and np.all(lam[[0, 1, 2, 4]] > 0)
    np.testing.assert_allclose(shrunk[3], shard_covariances(draws[3:4], "none")[0])


#: Centre of the minor mode in :func:`bimodal_shards` (the major mode is at 0).
MINOR_CENTER = np.array([3.0, -2.0, 1.0])


def bimodal_shards(seed: int, k: int = 40, s: int = 4000, p_minor: float = 0.3):
    """Shards that each found one of two modes (6 shard sds apart); the minor mode is
    found with probability p_minor. Returns draws, membership and shard parameters."""
    rng = np.random.default_rng(seed)
    d = 3
    minor = rng.uniform(size=k) < p_minor
    cov = k * 0.01 * equicorrelation(d, 0.5)
    centers = np.where(minor[:, None], MINOR_CENTER, 0.0)
    means = centers + mvn(rng, np.zeros(d), cov, k)
    draws = means[:, None] + mvn(rng, np.zeros(d), cov, (k, s))
    return draws, minor, means, np.broadcast_to(cov, (k, d, d))


def test_bimodal_returns_two_modes_with_their_weights():
    k, s = 40, 4000
    draws, minor, means, covs = bimodal_shards(seed=4, k=k, s=s)
    res = combine(draws, "bimodal", seed=1)
    info = res.info
    assert info["bimodal"] and info["num_modes"] == 2
    found = np.zeros(k, dtype=bool)
    found[info["modes"][1]["shards"]] = True
    # The split is the best 2-means cut of the shard means in one coordinate j: each shard
    # is nearer its own group's mean there than the other's.
    j = info["coordinate"]
    x = draws.mean(axis=1)[:, j]
    own = np.where(found, x[found].mean(), x[~found].mean())
    other = np.where(found, x[~found].mean(), x[found].mean())
    assert np.all(np.abs(x - own) <= np.abs(x - other))
    # A shard whose mean landed within one shard sd of the midpoint between the two centres
    # can fall on either side of the cut (the cut itself moves by ~0.2 shard sd with the
    # draws): every other shard is in the mode it found.
    shard_sd = np.sqrt(covs[0, j, j])
    clear = np.abs(means[:, j] - 0.5 * MINOR_CENTER[j]) > shard_sd
    np.testing.assert_array_equal(found[clear], minor[clear])
    # weight = share of shards in the mode; truth 0.3, binomial sd sqrt(.3 .7 / 40) = 0.072
    assert info["weights"][1] == pytest.approx(found.mean())
    assert abs(info["weights"][1] - 0.3) < 3 * np.sqrt(0.3 * 0.7 / k)
    for mode, members in zip(info["modes"], (~found, found), strict=True):
        m_true, c_true = product(means[members], covs[members])
        c_true = c_true * members.sum() / k  # tempered up to carry the whole data
        sd = np.sqrt(np.diag(c_true))
        # per-mode consensus of S draws: the MEAN_TOL argument with d = 3
        assert np.max(np.abs((np.asarray(mode["mean"]) - m_true) / sd)) < Z * np.sqrt(5 / s)
        sd_hat = np.sqrt(np.diag(mode["cov"]))
        assert np.max(np.abs(sd_hat / sd - 1)) < Z * np.sqrt(1 / (2 * s) + 4 / (found.sum() * s))
    # the returned draws are the mixture with those weights
    near_minor = np.linalg.norm(res.draws - np.asarray(info["modes"][1]["mean"]), axis=1) < 1.0
    assert near_minor.mean() == pytest.approx(info["weights"][1], abs=1.0 / s)
    assert choose_method(draws)[0] == "bimodal"


def test_bimodal_falls_back_to_consensus_on_one_mode(correlated):
    draws = correlated[0]
    res = combine(draws, "bimodal", seed=1)
    assert res.info["num_modes"] == 1 and not res.info["bimodal"]
    np.testing.assert_array_equal(res.draws, combine(draws, "consensus").draws)
    assert not detect_modes(draws).bimodal


def _normal_scale_shards(seed: int, k: int = 10, per_shard: int = 5, s: int = 4000):
    """Exact sub-posteriors of log sigma for y ~ N(0, sigma^2), sigma ~ HalfNormal(1),
    5 points per shard (skewed), by inverse-CDF sampling on a fine grid."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=k * per_shard)
    grid = np.linspace(-3, 3, 6001)

    def log_density(ys, scale):
        s2 = np.exp(2 * grid)
        return scale * (-0.5 * s2 + grid) - ys.size * grid - 0.5 * np.sum(ys**2) / s2

    def sample(lp, n):
        c = np.cumsum(np.exp(lp - lp.max()))
        return np.interp(rng.uniform(size=n), c / c[-1], grid)

    draws = np.stack([sample(log_density(y[i * per_shard:(i + 1) * per_shard], 1 / k), s)
                      for i in range(k)])[:, :, None]
    return draws, sample(log_density(y, 1.0), 20_000)


def test_semiparametric_keeps_shape_where_consensus_does_not():
    """Skewed sub-posteriors (5 points per shard): the semiparametric product is closer to
    the exact posterior than consensus (measured: ~0.94 vs ~0.80 marginal accuracy over
    seeds; exact draws reach ~0.98 through KDE noise)."""
    draws, exact = _normal_scale_shards(seed=1)
    semi = combine(draws, "semiparametric", seed=2)
    cons = combine(draws, "consensus")
    acc_semi = marginal_accuracy(semi.draws[:, 0], exact)
    acc_cons = marginal_accuracy(cons.draws[:, 0], exact)
    assert acc_semi > 0.9 and acc_semi > acc_cons + 0.05
    assert 0.1 < semi.info["acceptance_rate"] < 0.9


def test_every_combiner_returns_finite_draws_of_the_right_width(correlated):
    draws = correlated[0][:, :500]
    for method in COMBINERS:
        res = combine(draws, method, seed=0)
        assert res.draws.ndim == 2 and res.draws.shape[1] == D
        assert np.isfinite(res.draws).all(), method


def test_unknown_option_names_the_accepted_ones(correlated):
    with pytest.raises(ShardMCInputError, match=r"takes .*diagonal"):
        combine(correlated[0][:, :100], "consensus", bandwidth=1.0)
    with pytest.raises(ShardMCInputError, match="expected one of"):
        combine(correlated[0][:, :100], "nope")
