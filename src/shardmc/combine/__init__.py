"""Combine sub-posterior draws (K, S, d) in unconstrained space into one posterior.

A combiner is a pure function ``(draws, **options) -> (combined (S', d), info dict)``;
:data:`COMBINERS` maps method names to them. ``auto`` picks one (rules in
:mod:`shardmc.combine.auto`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from shardmc.combine.auto import AUTO_CHOICES, auto_combine, choose_method
from shardmc.combine.bimodal import bimodal_combine, detect_modes
from shardmc.combine.consensus import consensus_mc, gaussian_product, simple_average
from shardmc.combine.hierarchical import (
    accumulate_moments,
    hierarchical_gaussian,
    mean_covariance,
)
from shardmc.combine.robust import robust_consensus_mc
from shardmc.combine.semiparametric import semiparametric_product
from shardmc.combine.swiss import swiss
from shardmc.errors import ShardMCInputError

COMBINERS: dict[str, Callable[..., tuple[np.ndarray, dict]]] = {
    "consensus": consensus_mc,
    "gaussian": gaussian_product,
    "robust_consensus": robust_consensus_mc,
    "simple_average": simple_average,
    "hierarchical": hierarchical_gaussian,
    "bimodal": bimodal_combine,
    "semiparametric": semiparametric_product,
    "swiss": swiss,
    "auto": auto_combine,
}


#: Options ``fit`` fills in from the shard results (the Laplace precisions), not
#: settable in a run config.
ENGINE_OPTIONS = ("laplace",)


class CombineResult(NamedTuple):
    """Combined draws (S', d), the method used (``auto`` resolved) and its metadata."""

    draws: np.ndarray
    method: str
    info: dict[str, Any]


def check_method(method: str) -> None:
    """Raise a clear error for an unknown combination method."""
    if method not in COMBINERS:
        raise ShardMCInputError(
            f"combine: expected one of {sorted(COMBINERS)}, found {method!r}"
        )


def option_names(method: str) -> list[str]:
    """Keyword options ``method`` takes (``auto``: those of any combiner it may pick)."""
    fns = list(AUTO_CHOICES.values()) if method == "auto" else [COMBINERS[method]]
    return sorted({p for fn in fns for p in inspect.signature(fn).parameters} - {"draws"})


def check_options(method: str, options: dict[str, Any]) -> None:
    """Raise ShardMCInputError for options ``method`` does not take (before any sampling)."""
    check_method(method)
    names = option_names(method)
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ShardMCInputError(
            f"combine_options: method {method!r} takes {names}, found {unknown}")


def combine(draws: np.ndarray, method: str = "consensus", *, seed: int = 0,
            **options: Any) -> CombineResult:
    """Combine shard draws (K, S, d) with ``method``; ``seed`` feeds seeded combiners.

    An option the method does not take raises ShardMCInputError naming the ones it does.
    """
    check_options(method, options)
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim != 3:
        raise ShardMCInputError(f"draws: expected shape (K, S, d), found {draws.shape}")
    if "seed" in option_names(method):
        options["seed"] = seed
    combined, info = COMBINERS[method](draws, **options)
    return CombineResult(combined, info.get("chosen", method), info)


__all__ = ["AUTO_CHOICES", "COMBINERS", "ENGINE_OPTIONS", "CombineResult", "accumulate_moments",
           "auto_combine", "bimodal_combine", "check_method", "check_options",
           "choose_method", "combine", "consensus_mc", "detect_modes", "gaussian_product",
           "hierarchical_gaussian", "mean_covariance", "option_names", "robust_consensus_mc",
           "semiparametric_product", "simple_average", "swiss"]
