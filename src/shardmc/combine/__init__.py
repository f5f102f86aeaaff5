"""Combine sub-posterior draws (K, S, d) in unconstrained space into one posterior.

A combiner is a function ``(draws, **options) -> (combined (S', d), info dict)``;
:data:`COMBINERS` maps method names to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from shardmc.combine.consensus import consensus_mc, gaussian_product
from shardmc.errors import ShardMCInputError

COMBINERS: dict[str, Callable[..., tuple[np.ndarray, dict]]] = {
    "consensus": consensus_mc,
    "gaussian": gaussian_product,
}

#: Options that only some combiners accept; others ignore them.
_SEEDED = {"gaussian"}


class CombineResult(NamedTuple):
    """Combined draws (S', d), the method name and the combiner's metadata."""

    draws: np.ndarray
    method: str
    info: dict[str, Any]


def check_method(method: str) -> None:
    """Raise a clear error for an unknown combination method."""
    if method not in COMBINERS:
        raise ShardMCInputError(
            f"combine: expected one of {sorted(COMBINERS)}, found {method!r}"
        )


def combine(draws: np.ndarray, method: str = "consensus", *, seed: int = 0,
            **options: Any) -> CombineResult:
    """Combine shard draws (K, S, d) with ``method``; ``seed`` feeds seeded combiners."""
    check_method(method)
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim != 3:
        raise ShardMCInputError(f"draws: expected shape (K, S, d), found {draws.shape}")
    if method in _SEEDED:
        options["seed"] = seed
    combined, info = COMBINERS[method](draws, **options)
    return CombineResult(combined, method, info)


__all__ = ["COMBINERS", "CombineResult", "check_method", "combine", "consensus_mc",
           "gaussian_product"]
