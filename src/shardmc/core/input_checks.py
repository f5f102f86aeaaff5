"""Checks of data, settings and model made before any sampling; errors name the field."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from shardmc.core.sampling import CHAIN_METHODS, INIT_MASS, INIT_STRATEGIES, SamplerConfig
from shardmc.errors import ShardMCInputError

COMBINE_SPACES = ("unconstrained", "constrained")


def validate_data(data: Any) -> tuple[dict[str, np.ndarray], int]:
    """Per-point arrays as numpy, and their common length along axis 0."""
    if not isinstance(data, dict) or not data:
        raise ShardMCInputError(
            f"data: expected a non-empty dict of per-point arrays, found {type(data).__name__}"
        )
    arrays, lengths = {}, {}
    for name, value in data.items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise ShardMCInputError(
                f"data[{name!r}]: expected a numeric array, found dtype {arr.dtype}")
        if arr.ndim == 0:
            raise ShardMCInputError(
                f"data[{name!r}]: expected an array with a point axis, found a scalar; "
                "pass arguments that are not per point in model_kwargs")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise ShardMCInputError(
                f"data[{name!r}]: expected finite values, found {bad} NaN or inf")
        arrays[name], lengths[name] = arr, arr.shape[0]
    if len(set(lengths.values())) > 1:
        raise ShardMCInputError(
            "data: every array needs the same length along axis 0 (the point axis), found "
            + ", ".join(f"{k}={v}" for k, v in lengths.items()))
    return arrays, next(iter(lengths.values()))


def validate_num_shards(num_shards: Any, num_points: int) -> int:
    if isinstance(num_shards, bool) or not isinstance(num_shards, numbers.Integral):
        raise ShardMCInputError(
            f"num_shards: expected an integer >= 1, found {num_shards!r}")
    if num_shards < 1:
        raise ShardMCInputError(f"num_shards: expected an integer >= 1, found {num_shards}")
    if num_shards > num_points:
        raise ShardMCInputError(
            f"num_shards: expected at most the number of points ({num_points}), found "
            f"{num_shards}")
    return int(num_shards)


def _check(cond: bool, field: str, expected: str, found: Any) -> None:
    if not cond:
        raise ShardMCInputError(f"{field}: expected {expected}, found {found!r}")


def validate_config(cfg: SamplerConfig) -> SamplerConfig:
    """Check every SamplerConfig field; returns the config unchanged."""
    for name in ("num_warmup", "num_samples", "num_chains", "min_warmup", "min_samples",
                 "max_tree_depth", "max_attempts"):
        v = getattr(cfg, name)
        low = 0 if name in ("num_warmup", "min_warmup") else 1
        _check(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low,
               f"sampler.{name}", f"an integer >= {low}", v)
    _check(0.0 < cfg.target_accept_prob < 1.0, "sampler.target_accept_prob",
           "a number in (0, 1)", cfg.target_accept_prob)
    _check(0.0 <= cfg.divergence_threshold <= 1.0, "sampler.divergence_threshold",
           "a fraction in [0, 1]", cfg.divergence_threshold)
    _check(cfg.init_strategy in INIT_STRATEGIES, "sampler.init_strategy",
           f"one of {INIT_STRATEGIES}", cfg.init_strategy)
    _check(cfg.init_mass in INIT_MASS, "sampler.init_mass", f"one of {INIT_MASS}",
           cfg.init_mass)
    _check(cfg.chain_method in CHAIN_METHODS, "sampler.chain_method",
           f"one of {CHAIN_METHODS}", cfg.chain_method)
    for name in ("dense_mass", "adapt_mass_matrix", "adaptive_sampling", "laplace_target"):
        _check(isinstance(getattr(cfg, name), bool), f"sampler.{name}", "True or False",
               getattr(cfg, name))
    return cfg


def validate_space(space: str) -> str:
    _check(space in COMBINE_SPACES, "space", f"one of {COMBINE_SPACES}", space)
    return space


def validate_strata(strata: Any, num_points: int, sharding: str) -> np.ndarray | None:
    """Labels for "stratified" (required) and "interleaved" (optional) sharding."""
    if sharding not in ("stratified", "interleaved") or (strata is None
                                                         and sharding == "interleaved"):
        return None
    if strata is None:
        raise ShardMCInputError("strata: 'stratified' sharding needs a label per point, "
                                "found None")
    labels = np.asarray(strata)
    _check(labels.shape == (num_points,), "strata", f"shape ({num_points},)", labels.shape)
    return labels
