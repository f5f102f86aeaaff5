"""Robust consensus: shards whose means are outliers are down-weighted, never dropped."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from shardmc.combine.consensus import consensus_mc

#: A shard is an outlier when, in some coordinate, its mean lies more than a threshold of
#: robust sds from the median shard mean. Deviations are first measured in the shard's own
#: posterior sds (under homogeneity shard means scatter by about one shard sd), then
#: scaled by 1.4826 x their MAD across shards. The threshold is this floor, raised for many
#: shards and coordinates so that clean runs are flagged with probability about
#: ROBUST_FALSE_ALARM (see :func:`default_threshold`).
ROBUST_Z_THRESHOLD = 4.0
#: Family-wise probability that a run of clean shards has any shard flagged.
ROBUST_FALSE_ALARM = 0.05
#: Beyond the threshold the weight decays as exp(-(z - threshold)^2 / (2 width^2)): 0.61
#: half a robust sd beyond, 0.011 at 1.5, 3e-4 at 2, so a far shard's pull w z on the
#: mean goes to 0 (a redescending weight) while a shard just past the threshold keeps most.
ROBUST_DECAY_WIDTH = 0.5
#: MAD -> standard deviation for Gaussian data.
MAD_TO_SD = 1.4826
#: Floor of the robust spread of the standardised deviations (in shard sds): shards that
#: agree better than their widths (MAD ~ 0) do not make a one-sd difference an outlier.
MAD_FLOOR = 1.0
#: Smallest weight a shard can get: every shard stays in the combination, and its weight
#: is reported.
MIN_SHARD_WEIGHT = 1e-8


def outlier_scores(draws: np.ndarray) -> np.ndarray:
    """Robust z-scores (K, d) of the shard means (K, S, d draws).

    t_kj = (m_kj - median_k m_kj) / sd_kj (deviation in shard k's own sds), then
    z_kj = |t_kj - median_k t_kj| / max(1.4826 MAD_k(t_kj), MAD_FLOOR).
    """
    means = draws.mean(axis=1)
    sds = draws.std(axis=1, ddof=1)
    t = (means - np.median(means, axis=0)) / np.where(sds > 0, sds, 1.0)
    dev = np.abs(t - np.median(t, axis=0))
    spread = np.maximum(MAD_TO_SD * np.median(dev, axis=0), MAD_FLOOR)
    return dev / spread


def default_threshold(num_shards: int, dim: int) -> float:
    """ROBUST_Z_THRESHOLD, or the two-sided Bonferroni normal quantile for K d scores at
    family-wise level ROBUST_FALSE_ALARM if larger (4.0 up to K d ~ 800, 4.6 at 10 000)."""
    return max(ROBUST_Z_THRESHOLD,
               float(norm.isf(ROBUST_FALSE_ALARM / (2.0 * num_shards * dim))))


def robust_weights(scores: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Shard weights (K,) from z-scores (K, d): 1 up to ``threshold`` (default
    :func:`default_threshold`), then exp(-(z - threshold)^2 / (2 ROBUST_DECAY_WIDTH^2)) of
    the shard's largest score, floored at MIN_SHARD_WEIGHT."""
    if threshold is None:
        threshold = default_threshold(*scores.shape)
    excess = np.maximum(scores.max(axis=1) - threshold, 0.0)
    return np.maximum(np.exp(-0.5 * (excess / ROBUST_DECAY_WIDTH) ** 2), MIN_SHARD_WEIGHT)


def temper_shards(draws: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Draws of each sub-posterior raised to the power w_k, in the Gaussian approximation:
    deviations from the shard mean scaled by 1/sqrt(w_k) (covariance / w_k); shards with
    w_k = 1 are left bit-for-bit unchanged."""
    out = draws.copy()
    for k in np.flatnonzero(weights < 1.0):
        mean = draws[k].mean(axis=0)
        out[k] = mean + (draws[k] - mean) / np.sqrt(weights[k])
    return out


def robust_consensus_mc(
    draws: np.ndarray,
    *,
    threshold: float | None = None,
    diagonal: bool = False,
    shrinkage: str | bool = "auto",
    laplace: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Consensus Monte Carlo with outlier shards down-weighted.

    Scott et al. (2016) consensus (see :func:`consensus_mc`) over the tempered
    sub-posteriors p_k^{w_k}: w_k = 1 for shards whose mean is within ``threshold`` robust
    sds of the median in every coordinate (deviations in each shard's own sds, scaled by
    their MAD across shards, Hampel 1974; see :func:`outlier_scores`), decaying fast
    beyond (see :func:`robust_weights`). Tempering widens shard k's draws by 1/sqrt(w_k),
    so the combination stays exact for Gaussian shards. No shard is dropped: weights,
    scores and outliers are in the metadata. The combined target holds the prior to the
    power sum(w)/K (< 1 when shards are down-weighted), reported as ``prior_power``; for an
    exact posterior without a shard, exclude it and re-temper (``on_shard_failure``).
    laplace: optional (K, d, d) Laplace precisions (tempered with the shards).
    """
    k, _, d = draws.shape
    if threshold is None:
        threshold = default_threshold(k, d)
    scores = outlier_scores(draws)
    weights = robust_weights(scores, threshold)
    if laplace is not None:
        laplace = np.asarray(laplace, dtype=float) * weights[:, None, None]
    combined, info = consensus_mc(temper_shards(draws, weights), diagonal=diagonal,
                                  shrinkage=shrinkage, laplace=laplace)
    outliers = [int(i) for i in np.flatnonzero(weights < 1.0)]
    info.update({
        "threshold": float(threshold),
        "weights": weights.tolist(),
        "scores": scores.max(axis=1).tolist(),
        "outliers": outliers,
        "prior_power": float(weights.sum() / k),
    })
    return combined, info
