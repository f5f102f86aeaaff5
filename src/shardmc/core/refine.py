"""Importance correction of a CMC posterior toward the full-data posterior.

The combiners are exact for Gaussian sub-posteriors only; small, skewed shards bias them
(docs/combining.md). With the model and the data at hand, the full-data log density can
be evaluated at any point, chunk by chunk of points: at S points that costs S likelihood
evaluations, a small fraction of one shard's NUTS run (thousands of gradients).
:func:`importance_refine` draws S points from a multivariate t fitted to the combined
draws (heavier tails than the target, as importance sampling needs), weights each by
full posterior / proposal, Pareto-smooths the weights (PSIS; Vehtari, Simpson, Gelman,
Yao & Gabry 2024, JMLR 25(72); ``arviz.psislw``) and resamples them. The Pareto k-hat
says whether to trust the result: below PSIS_K_MAX the weighted estimate is reliable,
above it the CMC posterior is too far from the full one for this correction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import gammaln, logsumexp

from shardmc.core import nuts
from shardmc.core import params as P
from shardmc.core.input_checks import validate_data
from shardmc.core.posterior import Posterior
from shardmc.core.sharding import ShardLayout, assign_points, shard_arrays
from shardmc.errors import ShardMCInputError
from shardmc.runtime import enable_x64

if TYPE_CHECKING:
    from shardmc.core.engine import ModelProbe

#: Degrees of freedom of the multivariate-t proposal.
PROPOSAL_DF = 5
#: Pareto k-hat above which importance weights are unreliable (Vehtari et al. 2024).
PSIS_K_MAX = 0.7
#: Array entries per chunk (points, or row entries for row data such as XPCS frame rows)
#: when the full-data log density is evaluated (one compile per shape).
CHUNK_POINTS = 100_000
#: Draws per compiled call (evaluated one after another, see nuts.potential_batch); the
#: last batch is padded.
DRAW_BATCH = 256


def _chunked(model: Callable, data: dict[str, np.ndarray],
             model_kwargs: dict[str, Any]) -> tuple[ShardLayout, ModelProbe]:
    """The data cut into contiguous chunks of at most CHUNK_POINTS array entries, and the
    model probed on them (one trace of one chunk, never of all the data)."""
    from shardmc.core.engine import probe_model

    n = next(iter(data.values())).shape[0]
    width = max(int(np.prod(np.shape(a)[1:])) for a in data.values())  # entries per row
    layout = assign_points(n, min(n, -(-n * width // CHUNK_POINTS)), "contiguous")
    return layout, probe_model(model, data, model_kwargs, layout)


def full_potential(model: Callable, data: dict[str, np.ndarray], model_kwargs: dict[str, Any],
                   draws: np.ndarray,
                   chunked: tuple[ShardLayout, ModelProbe] | None = None) -> np.ndarray:
    """Potential energy (S,) of the untempered model on all ``data`` at flat unconstrained
    ``draws`` (S, d): the sum over point chunks of the chunk potentials with the prior
    tempered to 1/C, which is exact (the engine's shard factorisation). chunked: the
    result of :func:`_chunked` when the caller has it."""
    layout, probe = chunked or _chunked(model, data, model_kwargs)
    chunks = layout.num_shards
    program = nuts.ShardProgram(model=model, observed_sites=probe.observed_sites,
                                init_strategy="median", num_warmup=0, num_samples=0,
                                dense_mass=True, max_tree_depth=1,
                                masked=not layout.mask.all())
    s = draws.shape[0]
    padded = np.concatenate([draws, np.repeat(draws[-1:], -s % DRAW_BATCH, axis=0)])
    total = np.zeros(padded.shape[0])
    for c in range(chunks):
        chunk = shard_arrays(data, layout, c)
        for b in range(0, padded.shape[0], DRAW_BATCH):
            total[b:b + DRAW_BATCH] += np.asarray(nuts.potential_program(
                program, padded[b:b + DRAW_BATCH], chunk, layout.mask[c],
                np.float64(1.0 / chunks), model_kwargs, {}))
    return total[:s]


def t_log_density(x: np.ndarray, center: np.ndarray, chol: np.ndarray, df: float
                  ) -> np.ndarray:
    """Log density (S,) of the multivariate t (center, shape L Lᵀ, df) at x (S, d), from the
    Cholesky factor L: it needs no eigendecomposition, so it has no rank cutoff."""
    d = center.size
    z = solve_triangular(chol, (x - center).T, lower=True)
    maha = np.sum(z * z, axis=0)
    return (gammaln(0.5 * (df + d)) - gammaln(0.5 * df) - 0.5 * d * np.log(df * np.pi)
            - np.sum(np.log(np.diag(chol))) - 0.5 * (df + d) * np.log1p(maha / df))


def _t_proposal(center: np.ndarray, cov: np.ndarray, num: int, df: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``num`` draws of the multivariate t (center, cov, df) and their log densities.
    Raises LinAlgError when ``cov`` is not positive definite."""
    # scipy's rvs goes through multivariate_normal's SVD factor, whose eigenvectors (and
    # so the draws of one seed) differ between LAPACK kernels; the Cholesky factor does not.
    # scipy's multivariate_t also calls a covariance singular past a condition number of
    # ~5e9, which posteriors with prior-limited ridges reach (two_component: issue 18).
    chol = np.linalg.cholesky(cov)
    normal = rng.multivariate_normal(np.zeros(center.size), cov, size=num, method="cholesky")
    draws = center + normal / np.sqrt(rng.chisquare(df, size=num) / df)[:, None]
    return draws, t_log_density(draws, center, chol, df)


def importance_refine(posterior: Posterior, model: Callable, data: dict[str, Any], *,
                      model_kwargs: dict[str, Any] | None = None,
                      num_draws: int | None = None, seed: int = 0,
                      df: float = PROPOSAL_DF) -> Posterior:
    """The full-data posterior by importance sampling from the CMC posterior.

    posterior: a ``shardmc.fit`` result of ``model`` on ``data`` (same model_kwargs).
    Returns a Posterior with ``num_draws`` (default: as many as the input) resampled draws,
    deterministic sites recomputed, shard draws unchanged, and ``provenance["refine"]``:
    Pareto k-hat, importance ESS, proposal and cost. Raises ShardMCInputError when the
    model's coordinates differ from the posterior's.
    """
    enable_x64()
    data, _ = validate_data(data)
    model_kwargs = dict(model_kwargs or {})
    chunked = _chunked(model, data, model_kwargs)
    probe = chunked[1]
    coords = probe.layout.coordinate_names()
    if list(coords) != list(posterior.coords):
        raise ShardMCInputError(f"model: its coordinates {coords} differ from the "
                                f"posterior's {list(posterior.coords)}")
    z = np.asarray(posterior.unconstrained)
    center = z.mean(axis=0)
    cov = np.atleast_2d(np.cov(z.T))
    num = int(num_draws or z.shape[0])
    rng = np.random.default_rng(seed)
    draws, log_q = _t_proposal(center, cov, num, df, rng)
    log_w = -full_potential(model, data, model_kwargs, draws, chunked) - log_q
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    from shardmc.core._arviz import az
    from shardmc.core.engine import observation_counts

    with np.errstate(over="ignore"):  # psislw's tail fit overflows at a huge k-hat
        smoothed, khat = az.psislw(log_w - log_w.max())
    weights = np.exp(smoothed - logsumexp(smoothed))
    ess = float(1.0 / np.sum(weights**2))
    picks = _systematic_resample(weights, num, rng)
    kept = draws[picks]
    named = P.constrain(probe.layout, kept)
    named.update(P.deterministic_values(model, probe.subset_kwargs,
                                        probe.deterministic_kept, named))
    refine = {"method": "psis", "pareto_k": float(khat), "reliable": bool(khat < PSIS_K_MAX),
              "pareto_k_max": PSIS_K_MAX, "applied": True,
              "importance_ess": round(ess, 1), "proposal": f"multivariate t, df {df}",
              "proposal_draws": num, "seed": seed,
              "num_points": int(observation_counts(model, data, model_kwargs).sum())}
    # the combination's Monte Carlo error describes the proposal, not these draws
    provenance = {**posterior.provenance, "refine": refine, "combine_mc_error": None}
    return dataclasses.replace(posterior, samples=named, unconstrained=kept,
                               provenance=provenance)


def _systematic_resample(weights: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``num`` systematic-resampling picks by ``weights`` (sum 1), shuffled."""
    positions = (rng.uniform() + np.arange(num)) / num
    picks = np.searchsorted(np.cumsum(weights), positions, side="right")
    return rng.permutation(np.minimum(picks, weights.size - 1))
