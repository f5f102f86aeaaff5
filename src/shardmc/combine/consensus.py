"""Consensus Monte Carlo (Scott et al. 2016), its equal-weight variant and the Gaussian
product (Neiswanger et al. 2014)."""

from __future__ import annotations

import numpy as np

from shardmc.combine.covariance import precisions, shard_covariances


def shard_weight_matrices(draws: np.ndarray, diagonal: bool = False,
                          shrinkage: str | bool = "auto",
                          pooled: np.ndarray | None = None,
                          laplace: np.ndarray | None = None) -> np.ndarray:
    """Precision W_k (K, d, d) of each shard's draws (covariances from
    :func:`shardmc.combine.covariance.shard_covariances`); only the diagonal if ``diagonal``."""
    covs = shard_covariances(draws, shrinkage, pooled, laplace)
    if not diagonal:
        return precisions(covs)
    d = covs.shape[-1]
    w = np.zeros_like(covs)
    idx = np.arange(d)
    w[:, idx, idx] = 1.0 / np.diagonal(covs, axis1=1, axis2=2)
    return w


def consensus_mc(
    draws: np.ndarray,
    *,
    diagonal: bool = False,
    shrinkage: str | bool = "auto",
    shard_weights: np.ndarray | None = None,
    laplace: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Draw-wise precision-weighted average of shard draws.

    Scott, Blocker, Bonassi, Chipman, George & McCulloch (2016), "Bayes and big data:
    the consensus Monte Carlo algorithm", Int. J. Management Science and Engineering
    Management 11(2). theta_s = (sum_k W_k)^-1 sum_k W_k theta_{k,s} with W_k the inverse
    of shard k's sample covariance (its diagonal if ``diagonal``). Exact when every
    sub-posterior is Gaussian (with full W_k).

    draws: (K, S, d) unconstrained draws. shard_weights: optional (K,) multipliers of W_k.
    laplace: optional (K, d, d) Laplace precisions of the shards (``fit`` passes them),
    the target the sample covariances shrink toward (:mod:`shardmc.combine.covariance`).
    Returns combined draws (S, d) and metadata.
    """
    k, _, _ = draws.shape
    w = shard_weight_matrices(draws, diagonal, shrinkage, laplace=laplace)
    if shard_weights is not None:
        w = w * np.asarray(shard_weights, dtype=float)[:, None, None]
    total = w.sum(axis=0)
    weighted = np.einsum("kij,ksj->si", w, draws)
    combined = np.linalg.solve(total, weighted.T).T
    info = {"diagonal": diagonal, "shrinkage": str(shrinkage), "num_shards": k,
            "laplace_target": laplace is not None}
    return combined, info


def simple_average(draws: np.ndarray) -> tuple[np.ndarray, dict]:
    """Draw-wise unweighted average theta_s = (1/K) sum_k theta_{k,s}.

    The equal-weight consensus of Scott et al. (2016) (see :func:`consensus_mc`). Exact for
    Gaussian sub-posteriors with equal covariances (equal-sized, homogeneous shards), and
    needs no covariance estimate; shards of unequal information get the wrong weights.
    """
    k = draws.shape[0]
    return draws.mean(axis=0), {"num_shards": k}


def product_moments(precision_sum: np.ndarray,
                    precision_mean_sum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, cov) of the Gaussian product from sum_k W_k and sum_k W_k mu_k."""
    cov = np.linalg.inv(precision_sum)
    cov = 0.5 * (cov + cov.T)
    return cov @ precision_mean_sum, cov


def gaussian_draws(mean: np.ndarray, cov: np.ndarray, num_draws: int,
                   seed: int) -> np.ndarray:
    """``num_draws`` draws from N(mean, cov) with ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(mean, cov, size=num_draws, method="cholesky")


def gaussian_product(
    draws: np.ndarray,
    *,
    num_draws: int | None = None,
    seed: int = 0,
    diagonal: bool = False,
    shrinkage: str | bool = "auto",
    laplace: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Product of Gaussian approximations to the sub-posteriors, with fresh draws.

    Neiswanger, Wang & Xing (2014), "Asymptotically exact, embarrassingly parallel MCMC",
    UAI (the parametric estimator). Sigma = (sum_k Sigma_k^-1)^-1,
    mu = Sigma sum_k Sigma_k^-1 mu_k (diagonal Sigma_k if ``diagonal``, which drops every
    correlation). Returns ``num_draws`` (default S) draws from N(mu, Sigma), seeded by
    ``seed``, and {mean, cov} in the metadata. laplace: see :func:`consensus_mc`.
    """
    k, s, _ = draws.shape
    prec = shard_weight_matrices(draws, diagonal, shrinkage, laplace=laplace)
    mean, cov = product_moments(prec.sum(axis=0),
                                np.einsum("kij,kj->i", prec, draws.mean(axis=1)))
    out = gaussian_draws(mean, cov, num_draws or s, seed)
    return out, {"mean": mean.tolist(), "cov": cov.tolist(), "num_shards": k,
                 "diagonal": diagonal}
