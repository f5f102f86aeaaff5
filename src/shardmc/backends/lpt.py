"""Longest-processing-time-first (LPT) order of shards.

Cost of a shard = real points x (1 + normalised noise), as in the reference: noisier
shards take longer NUTS trees. A spec may carry its own ``cost`` (any positive number,
e.g. a measured time) which then wins. Idle workers take the next shard in this order
(dynamic scheduling, no pre-assignment), so LPT only decides which shards start first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Data keys taken as per-point noise scales when weighting shard costs.
NOISE_KEYS = ("sigma", "noise", "sigma_obs", "noise_sd")


def noise_level(spec: Any) -> float | None:
    """Mean |noise| over a spec's real points, or None if its data has no noise array."""
    data = getattr(spec, "data", None) or {}
    mask = getattr(spec, "mask", None)
    for key in NOISE_KEYS:
        if key in data:
            values = np.abs(np.asarray(data[key], dtype=float))
            if mask is not None and values.shape[:1] == np.shape(mask):
                values = values[np.asarray(mask, dtype=bool)]
            return float(values.mean()) if values.size else 0.0
    return None


def cost_terms(spec: Any) -> tuple[float, float | None, float | None]:
    """(real points, noise level, explicit cost) of a spec, read while its data is at hand."""
    explicit = getattr(spec, "cost", None)
    return (float(getattr(spec, "num_points", 1)), noise_level(spec),
            None if explicit is None else float(explicit))


def shard_costs(terms: Sequence[tuple[float, float | None, float | None]]) -> list[float]:
    """Relative costs from :func:`cost_terms`: the explicit cost if set, else
    points x (1 + noise / largest noise)."""
    top = max((t[1] for t in terms if t[1] is not None), default=0.0)
    costs = []
    for points, level, explicit in terms:
        if explicit is not None:
            costs.append(explicit)
            continue
        weight = 1.0 + (level / top if level is not None and top > 0 else 0.0)
        costs.append(points * weight)
    return costs


def lpt_order(costs: Sequence[float]) -> list[int]:
    """Positions sorted by decreasing cost (ties keep their original order)."""
    return sorted(range(len(costs)), key=lambda i: -costs[i])
