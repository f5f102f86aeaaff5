"""Per-shard covariance estimates and their inverses (precisions) for the combiners."""

from __future__ import annotations

import numpy as np

#: With "auto" shrinkage, Ledoit-Wolf is applied when a shard has fewer than this many
#: draws per dimension; above it the sample covariance is accurate enough to use as is.
SHRINKAGE_DRAWS_PER_DIM = 50


def ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf (2004) shrinkage covariance of draws ``x`` (S, d) toward mu * I."""
    s, d = x.shape
    xc = x - x.mean(axis=0)
    emp = xc.T @ xc / s
    mu = np.trace(emp) / d
    delta = np.sum((emp - mu * np.eye(d)) ** 2) / d
    x2 = xc**2
    beta_bar = np.sum(x2.T @ x2 / s - emp**2) / (d * s)
    beta = min(beta_bar, delta)
    shrink = 0.0 if delta == 0 else beta / delta
    return shrink * mu * np.eye(d) + (1.0 - shrink) * emp


def shard_covariances(draws: np.ndarray, shrinkage: str | bool = "auto") -> np.ndarray:
    """Covariance (K, d, d) of each shard's draws (K, S, d); optional Ledoit-Wolf shrinkage."""
    k, s, d = draws.shape
    use_lw = shrinkage is True or (shrinkage == "auto" and s < SHRINKAGE_DRAWS_PER_DIM * d)
    if use_lw:
        return np.stack([ledoit_wolf(draws[i]) for i in range(k)])
    xc = draws - draws.mean(axis=1, keepdims=True)
    return np.einsum("ksi,ksj->kij", xc, xc) / (s - 1)


def precisions(covs: np.ndarray) -> np.ndarray:
    """Inverse of each (d, d) covariance, via a symmetric solve (pseudo-inverse if singular)."""
    try:
        prec = np.linalg.inv(covs)
    except np.linalg.LinAlgError:
        prec = np.linalg.pinv(covs, hermitian=True)
    return 0.5 * (prec + np.swapaxes(prec, -1, -2))
