"""Monte Carlo error of a combined posterior's mean, from the shards' finite draws.

A combiner sees S draws per shard, not the sub-posteriors themselves. For consensus the
leading error is not the 1/sqrt(S) of a mean: the precision weights are estimated too,
and their error acts on shard means that scatter by a shard sd (sqrt(K) combined sds),
so the combined mean is off by about sqrt((d + 2) / S) combined posterior sds per
coordinate, whatever the shard size or K (derivation in tests/unit/test_combiners.py).
With d = 10 and S = 2 400 that is 0.07 sd: as large as the bias that CMC is judged by.
Shrinking the weights toward the shards' Laplace precisions (what ``fit`` does, see
:mod:`shardmc.combine.covariance`) removes most of it; what remains is measured here.

:func:`jackknife_mean_error` measures it for any combiner by the delete-a-batch
jackknife (Quenouille 1949; Tukey 1958) over contiguous batches of every chain, which
absorbs the draws' autocorrelation as batch means do (Flegal & Jones 2010).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Batches (all chains together) deleted one at a time by the jackknife.
JACKKNIFE_BATCHES = 20
#: Fewest draws in one batch of a chain; shorter chains get fewer batches.
MIN_BATCH_DRAWS = 10
#: Combined-mean Monte Carlo error (combined posterior sds) above which diagnose() warns:
#: the size of the bias the accuracy goals tolerate (benchmarks/accuracy.py).
COMBINE_MC_ERROR_WARN = 0.1
#: The error diagnose() sizes its advice for (draws per shard that reach it).
COMBINE_MC_ERROR_TARGET = 0.05


def batch_labels(num_chains: int, draws_per_chain: int,
                 batches: int = JACKKNIFE_BATCHES) -> np.ndarray:
    """Batch index (C * S,) of each draw of chains laid end to end: every chain is cut
    into ceil(batches / C) contiguous batches of near-equal length."""
    per_chain = max(1, min(-(-batches // num_chains), draws_per_chain // MIN_BATCH_DRAWS))
    within = np.arange(draws_per_chain) * per_chain // draws_per_chain
    return (np.arange(num_chains)[:, None] * per_chain + within[None, :]).ravel()


def jackknife_mean_error(draws: np.ndarray,
                         combine_fn: Callable[[np.ndarray], np.ndarray],
                         num_chains: int = 1,
                         batches: int = JACKKNIFE_BATCHES) -> np.ndarray:
    """Monte Carlo sd (d,) of the combined mean, in the draws' units.

    draws: (K, C * S, d) shard draws, each shard's C chains laid end to end.
    combine_fn: shard draws (K, S', d) -> combined draws (S'', d). The j-th replicate
    combines every shard with batch j deleted; the error is the jackknife sd
    sqrt((B - 1) / B * sum_j (m_j - m_bar)^2) of the replicates' means m_j. It is the
    error of the combined distribution's mean (a combiner's own resampling noise with a
    fixed seed is common to all replicates and cancels).
    """
    _, n, d = draws.shape
    labels = batch_labels(num_chains, n // num_chains, batches)
    b = int(labels.max()) + 1
    if b < 2:
        return np.full(d, np.nan)
    reps = np.stack([combine_fn(draws[:, labels != j]).mean(axis=0) for j in range(b)])
    return np.sqrt((b - 1) / b * ((reps - reps.mean(axis=0)) ** 2).sum(axis=0))


def draws_for_error(num_draws: int, error: float,
                    target: float = COMBINE_MC_ERROR_TARGET) -> int:
    """Draws per shard for a combined-mean error of ``target``, from ``error`` at
    ``num_draws`` (the error falls as 1 / sqrt(draws))."""
    return int(np.ceil(num_draws * (error / target) ** 2))


#: Combiners whose mean error ``fit`` measures (``semiparametric`` is too slow to rerun
#: once per batch, and a model-aware combiner function is opaque).
JACKKNIFE_METHODS = ("consensus", "gaussian", "robust_consensus", "simple_average",
                     "hierarchical", "bimodal", "swiss")


def combined_mean_error(shard_draws: np.ndarray, combined: np.ndarray, method: str,
                        combine_fn: Callable[[np.ndarray], np.ndarray],
                        coords: list[str]) -> dict | None:
    """JSON-able record of the combined mean's Monte Carlo error per coordinate, in sds
    of the ``combined`` draws (S', d); None for a method outside JACKKNIFE_METHODS.

    shard_draws: (K, C, S, d) unconstrained draws; combine_fn: see
    :func:`jackknife_mean_error` (it must use the same method and options as ``combined``).
    """
    if method not in JACKKNIFE_METHODS:
        return None
    k, c, s, d = shard_draws.shape
    err = jackknife_mean_error(shard_draws.reshape(k, c * s, d), combine_fn, c)
    sd = combined.std(axis=0, ddof=1)
    rel = np.where(sd > 0, err / np.where(sd > 0, sd, 1.0), np.nan)
    return {"coords": list(coords), "sd_units": [round(float(v), 5) for v in rel],
            "draws_per_shard": c * s, "method": method,
            "batches": int(batch_labels(c, s).max()) + 1}
