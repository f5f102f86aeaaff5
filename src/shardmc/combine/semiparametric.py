"""Semiparametric product of sub-posteriors (Neiswanger, Wang & Xing 2014): keeps shape."""

from __future__ import annotations

import numpy as np

from shardmc.combine.consensus import product_moments
from shardmc.combine.covariance import precisions, shard_covariances

#: Independent-Metropolis-within-Gibbs chains run side by side (vectorised).
SEMI_NUM_CHAINS = 128
#: Sweeps (one proposal per shard each) discarded before draws are kept.
SEMI_BURN_IN = 100
#: Sweeps between kept draws of a chain.
SEMI_THIN = 5
#: Default bandwidth, in mean-shard-sd units after whitening:
#: h = SEMI_BANDWIDTH_SCALE * (S / 1000)^(-1 / (4 + d)) (a Silverman-type rate). 0.4 was
#: the best of 0.3-0.7 on the normal-scale benchmark with 2-20 points per shard.
SEMI_BANDWIDTH_SCALE = 0.4


def default_bandwidth(num_draws: int, dim: int) -> float:
    """The kernel bandwidth used when none is given (see SEMI_BANDWIDTH_SCALE)."""
    return SEMI_BANDWIDTH_SCALE * (num_draws / 1000.0) ** (-1.0 / (4.0 + dim))


def _whiten(draws: np.ndarray, shrinkage) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws in coordinates where the mean shard covariance is the identity."""
    covs = shard_covariances(draws, shrinkage)
    chol = np.linalg.cholesky(covs.mean(axis=0))
    origin = draws.mean(axis=(0, 1))
    z = np.linalg.solve(chol, (draws - origin).reshape(-1, draws.shape[-1]).T).T
    return z.reshape(draws.shape), chol, origin


def semiparametric_product(
    draws: np.ndarray,
    *,
    bandwidth: float | None = None,
    num_draws: int | None = None,
    num_chains: int = SEMI_NUM_CHAINS,
    burn_in: int = SEMI_BURN_IN,
    thin: int = SEMI_THIN,
    seed: int = 0,
    shrinkage: str | bool = "auto",
) -> tuple[np.ndarray, dict]:
    """Draws from the product of semiparametric sub-posterior density estimates.

    Neiswanger, Wang & Xing (2014), "Asymptotically exact, embarrassingly parallel MCMC",
    UAI, section 3.3: each sub-posterior is a Gaussian fit times a kernel estimate of the
    ratio (Hjort & Glad 1995), p_k(x) = N(x; mu_k, S_k) (1/S) sum_t N(x; x_t, h^2 I) /
    N(x_t; mu_k, S_k). Their product is a mixture over index tuples t = (t_1..t_K), sampled
    here with independent Metropolis within Gibbs (their algorithm 1, fixed bandwidth,
    ``num_chains`` chains vectorised), in coordinates whitened by the mean shard covariance.
    Keeps skew and other non-Gaussian shape that the consensus averages away; best for
    few dimensions (the kernel part mixes slowly when d is large).
    """
    k, s, d = draws.shape
    z, chol, origin = _whiten(draws, shrinkage)
    h = float(bandwidth) if bandwidth is not None else default_bandwidth(s, d)
    mu_k = z.mean(axis=1)
    prec_k = precisions(shard_covariances(z, shrinkage))
    mu, sigma = product_moments(prec_k.sum(axis=0), np.einsum("kij,kj->i", prec_k, mu_k))
    dev = z - mu_k[:, None]
    log_fit = -0.5 * np.einsum("ksi,kij,ksj->ks", dev, prec_k, dev)
    sq = np.sum(z**2, axis=-1)
    a_inv = np.linalg.inv(sigma + (h**2 / k) * np.eye(d))
    sigma_inv = np.linalg.inv(sigma)
    cov_t = np.linalg.inv((k / h**2) * np.eye(d) + sigma_inv)
    chol_t = np.linalg.cholesky(0.5 * (cov_t + cov_t.T))

    def log_w(sum_z, sum_sq, sum_fit):
        mb = sum_z / k
        dm = mb - mu
        return (-(sum_sq - k * np.sum(mb**2, axis=-1)) / (2 * h**2)
                - 0.5 * np.einsum("ci,ij,cj->c", dm, a_inv, dm) - sum_fit)

    rng = np.random.default_rng(seed)
    shards = np.arange(k)
    idx = rng.integers(0, s, size=(num_chains, k))
    sum_z = z[shards, idx].sum(axis=1)
    sum_sq, sum_fit = sq[shards, idx].sum(axis=1), log_fit[shards, idx].sum(axis=1)
    lw = log_w(sum_z, sum_sq, sum_fit)
    wanted = num_draws or s
    kept_sweeps = -(-wanted // num_chains)
    sweeps = burn_in + thin * kept_sweeps
    accepted, out = 0.0, []
    for sweep in range(sweeps):
        for j in range(k):
            new, old = rng.integers(0, s, size=num_chains), idx[:, j]
            p_z = sum_z - z[j, old] + z[j, new]
            p_sq = sum_sq - sq[j, old] + sq[j, new]
            p_fit = sum_fit - log_fit[j, old] + log_fit[j, new]
            p_lw = log_w(p_z, p_sq, p_fit)
            acc = np.log(rng.uniform(size=num_chains)) < p_lw - lw
            idx[acc, j] = new[acc]
            sum_z[acc], sum_sq[acc], sum_fit[acc], lw[acc] = (
                p_z[acc], p_sq[acc], p_fit[acc], p_lw[acc])
            accepted += acc.mean()
        if sweep >= burn_in and (sweep - burn_in) % thin == thin - 1:
            mean_t = ((k / h**2) * sum_z / k + sigma_inv @ mu) @ cov_t.T
            out.append(mean_t + rng.standard_normal(mean_t.shape) @ chol_t.T)
    zs = np.concatenate(out)[:wanted]
    combined = zs @ chol.T + origin
    info = {"bandwidth": h, "acceptance_rate": float(accepted / (sweeps * k)),
            "num_chains": num_chains, "sweeps": sweeps, "thin": thin, "num_shards": k}
    return combined, info
