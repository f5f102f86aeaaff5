"""SwISS (Vyner, Nemeth & Sherlock 2023): affinely aligned sub-posteriors, pooled."""

from __future__ import annotations

import numpy as np

from shardmc.combine.consensus import product_moments
from shardmc.combine.covariance import precisions, shard_covariances


def _sym_power(a: np.ndarray, power: float) -> np.ndarray:
    """a^power for symmetric positive definite matrices (..., d, d)."""
    vals, vecs = np.linalg.eigh(a)
    return (vecs * np.maximum(vals, np.finfo(float).tiny)[..., None, :] ** power) @ np.swapaxes(
        vecs, -1, -2)


def swiss(draws: np.ndarray, *, shrinkage: str | bool = "auto",
          laplace: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Subposteriors with Inflation, Scaling and Shifting.

    Vyner, Nemeth & Sherlock (2023), "SwISS: A scalable Markov chain Monte Carlo
    divide-and-conquer strategy", Stat 12(1), e523. Each shard's draws are mapped affinely,
    x -> mu + Sigma^(1/2) Sigma_k^(-1/2) (x - mu_k), onto the mean mu and covariance Sigma
    of the Gaussian product of the sub-posteriors, and all K S mapped draws are pooled.
    Each shard keeps its own shape (skew, tails); the sub-posteriors' shape, not the full
    posterior's, is what survives, so it helps when shape does not shrink with shard size.
    laplace: see :func:`shardmc.combine.consensus.consensus_mc`.
    """
    k, s, d = draws.shape
    covs = shard_covariances(draws, shrinkage, laplace=laplace)
    prec = precisions(covs)
    means = draws.mean(axis=1)
    mean, cov = product_moments(prec.sum(axis=0), np.einsum("kij,kj->i", prec, means))
    maps = _sym_power(cov, 0.5)[None] @ _sym_power(covs, -0.5)
    aligned = mean + np.einsum("kij,ksj->ksi", maps, draws - means[:, None])
    return aligned.reshape(k * s, d), {"mean": mean.tolist(), "cov": cov.tolist(),
                                       "num_shards": k}
