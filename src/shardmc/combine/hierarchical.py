"""Gaussian product for very many shards: streaming moment accumulation in chunks."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from shardmc.combine.consensus import gaussian_draws, product_moments, shard_weight_matrices
from shardmc.combine.covariance import POOLED_MIN_SHARDS, raw_covariances, uses_pooling

#: Shards summarised at a time: peak extra memory is one chunk's (chunk, d, d) precisions.
HIERARCHICAL_CHUNK_SIZE = 256


def mean_covariance(chunks: Iterable[np.ndarray], shrinkage: str | bool = "auto"
                    ) -> np.ndarray:
    """Mean over all shards of their own covariances (the pooled shape), chunk by chunk."""
    total, count = None, 0
    for chunk in chunks:
        covs = raw_covariances(np.asarray(chunk, dtype=np.float64), shrinkage)
        total = covs.sum(axis=0) if total is None else total + covs.sum(axis=0)
        count += covs.shape[0]
    if total is None:
        raise ValueError("mean_covariance: expected at least one chunk of shard draws")
    return total / count


def accumulate_moments(
    chunks: Iterable[np.ndarray],
    *,
    diagonal: bool = False,
    shrinkage: str | bool = "auto",
    pooled: np.ndarray | None = None,
    laplace: Iterable[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Sum of shard precisions W_k (d, d) and of W_k mu_k (d,) over chunks of shard draws.

    chunks: arrays (K_i, S, d), e.g. slices of a memory-mapped array or shards read from a
    run directory, so only one chunk is in memory. pooled: the mean shard covariance
    (:func:`mean_covariance`, a first pass) for pooled shrinkage; without it each chunk is
    pooled on its own. laplace: the shards' Laplace precisions (K_i, d, d), chunk by
    chunk in step with ``chunks`` (see :func:`shardmc.combine.consensus.consensus_mc`).
    Returns (sum W_k, sum W_k mu_k, K). No synthetic draws are made on
    the way (recombining synthetic draws from partial products is what inflated the
    reference's precision).
    """
    prec_sum: np.ndarray | None = None
    prec_mean_sum: np.ndarray | None = None
    count = 0
    targets = iter(laplace) if laplace is not None else None
    for chunk in chunks:
        chunk = np.asarray(chunk, dtype=np.float64)
        w = shard_weight_matrices(chunk, diagonal, shrinkage, pooled,
                                  None if targets is None else next(targets))
        wm = np.einsum("kij,kj->i", w, chunk.mean(axis=1))
        ws = w.sum(axis=0)
        prec_sum = ws if prec_sum is None else prec_sum + ws
        prec_mean_sum = wm if prec_mean_sum is None else prec_mean_sum + wm
        count += chunk.shape[0]
    if prec_sum is None or prec_mean_sum is None:
        raise ValueError("accumulate_moments: expected at least one chunk of shard draws")
    return prec_sum, prec_mean_sum, count


def iter_chunks(draws: np.ndarray, chunk_size: int) -> Iterable[np.ndarray]:
    """Consecutive slices of ``chunk_size`` shards (views: no copy of the whole array)."""
    for start in range(0, draws.shape[0], chunk_size):
        yield draws[start:start + chunk_size]


def hierarchical_gaussian(
    draws: np.ndarray,
    *,
    chunk_size: int = HIERARCHICAL_CHUNK_SIZE,
    num_draws: int | None = None,
    seed: int = 0,
    diagonal: bool = False,
    shrinkage: str | bool = "auto",
    laplace: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """The parametric product of Neiswanger, Wang & Xing (2014, UAI) computed by streaming.

    Shard moments are accumulated ``chunk_size`` shards at a time (O(d^2) accumulators,
    no intermediate draws; with pooled shrinkage a first pass finds the mean shard
    covariance), then N(mu, Sigma) is drawn once: the same result as
    :func:`shardmc.combine.consensus.gaussian_product` up to summation order. Meant for
    thousands of shards, or for draws that do not fit in memory (pass an np.memmap, or
    call :func:`accumulate_moments` on any iterator of chunks). laplace: (K, d, d), see
    :func:`shardmc.combine.consensus.consensus_mc`.
    """
    k, s, _ = draws.shape
    pooled = None
    if uses_pooling(shrinkage) and k >= POOLED_MIN_SHARDS:  # first pass: the pooled shape
        pooled = mean_covariance(iter_chunks(draws, chunk_size), shrinkage)
    prec_sum, prec_mean_sum, k = accumulate_moments(
        iter_chunks(draws, chunk_size), diagonal=diagonal, shrinkage=shrinkage, pooled=pooled,
        laplace=None if laplace is None else iter_chunks(np.asarray(laplace), chunk_size))
    mean, cov = product_moments(prec_sum, prec_mean_sum)
    out = gaussian_draws(mean, cov, num_draws or s, seed)
    return out, {"mean": mean.tolist(), "cov": cov.tolist(), "num_shards": k,
                 "chunk_size": int(chunk_size), "diagonal": diagonal}
