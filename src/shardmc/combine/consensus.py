"""Consensus Monte Carlo (Scott et al. 2016) and the Gaussian product (Neiswanger et al. 2014)."""

from __future__ import annotations

import numpy as np

from shardmc.combine.covariance import precisions, shard_covariances


def consensus_mc(
    draws: np.ndarray,
    *,
    diagonal: bool = False,
    shrinkage: str | bool = "auto",
    shard_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Draw-wise precision-weighted average of shard draws.

    Scott, Blocker, Bonassi, Chipman, George & McCulloch (2016), "Bayes and big data:
    the consensus Monte Carlo algorithm", Int. J. Management Science and Engineering
    Management 11(2). theta_s = (sum_k W_k)^-1 sum_k W_k theta_{k,s} with W_k the inverse
    of shard k's sample covariance (its diagonal if ``diagonal``). Exact when every
    sub-posterior is Gaussian.

    draws: (K, S, d) unconstrained draws. shard_weights: optional (K,) multipliers of W_k.
    Returns combined draws (S, d) and metadata.
    """
    k, _, d = draws.shape
    covs = shard_covariances(draws, shrinkage)
    if diagonal:
        w = np.zeros_like(covs)
        idx = np.arange(d)
        w[:, idx, idx] = 1.0 / np.diagonal(covs, axis1=1, axis2=2)
    else:
        w = precisions(covs)
    if shard_weights is not None:
        w = w * np.asarray(shard_weights, dtype=float)[:, None, None]
    total = w.sum(axis=0)
    weighted = np.einsum("kij,ksj->si", w, draws)
    combined = np.linalg.solve(total, weighted.T).T
    info = {"diagonal": diagonal, "shrinkage": str(shrinkage), "num_shards": k}
    return combined, info


def gaussian_product(
    draws: np.ndarray,
    *,
    num_draws: int | None = None,
    seed: int = 0,
    shrinkage: str | bool = "auto",
) -> tuple[np.ndarray, dict]:
    """Product of Gaussian approximations to the sub-posteriors, with fresh draws.

    Neiswanger, Wang & Xing (2014), "Asymptotically exact, embarrassingly parallel MCMC",
    UAI (the parametric estimator). Sigma = (sum_k Sigma_k^-1)^-1,
    mu = Sigma sum_k Sigma_k^-1 mu_k. Returns ``num_draws`` (default S) draws from
    N(mu, Sigma), seeded by ``seed``, and {mean, cov} in the metadata.
    """
    k, s, _ = draws.shape
    prec = precisions(shard_covariances(draws, shrinkage))
    total = prec.sum(axis=0)
    cov = np.linalg.inv(total)
    cov = 0.5 * (cov + cov.T)
    mean = cov @ np.einsum("kij,kj->i", prec, draws.mean(axis=1))
    rng = np.random.default_rng(seed)
    out = rng.multivariate_normal(mean, cov, size=num_draws or s, method="cholesky")
    return out, {"mean": mean.tolist(), "cov": cov.tolist(), "num_shards": k}
