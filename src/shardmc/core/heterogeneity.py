"""Cross-shard statistics: do the shards agree, and are their sub-posteriors Gaussian?

Pure functions on shard draws (K, S, d) or shard means and variances; the plain-language
report built from them is :func:`shardmc.core.diagnosis.diagnose`.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
from scipy.stats import chi2, kurtosis, skew

#: Relative floor of the bounds-aware CV's scale: 1 % of the bound range (the reference's).
CV_RANGE_FRACTION = 0.01
#: Scale floor of the CV when a parameter has no finite bounds (the reference's 1e-10).
CV_TINY = 1e-10
#: Within-shard mode detection: KDE of each shard's standardised draws on this grid.
MODE_GRID_POINTS = 256
#: At most this many (evenly thinned) draws per shard and coordinate enter the KDE.
MODE_MAX_DRAWS = 2000
#: A density peak counts as a mode when at least this fraction of the highest peak ...
MODE_MIN_HEIGHT = 0.15
#: ... and the density between it and its neighbour dips below this fraction of the lower.
MODE_MAX_DIP = 0.8


def flat_shards(draws: np.ndarray) -> np.ndarray:
    """Shard draws as (K, S, d): chains (K, C, S, d) are pooled."""
    draws = np.asarray(draws, dtype=float)
    return draws.reshape(draws.shape[0], -1, draws.shape[-1]) if draws.ndim == 4 else draws


def cochran_q(means: np.ndarray, variances: np.ndarray) -> dict[str, np.ndarray]:
    """Heterogeneity of shard means (K, d) against their own posterior variances (K, d).

    Cochran's Q (Cochran 1954; the meta-analysis test): Q_j = sum_k (m_kj - m_j)^2 / v_kj
    around the precision-weighted mean m_j. If every shard estimates the same parameter,
    shard means scatter by about their sub-posterior sds and Q_j ~ chi2(K - 1) (slightly
    less with an informative prior, so the test is conservative). Returns q, df, p_value
    and I^2 = max(0, (Q - df) / Q), the share of the spread not explained by shard width.
    """
    w = 1.0 / variances
    pooled = (w * means).sum(axis=0) / w.sum(axis=0)
    q = (w * (means - pooled) ** 2).sum(axis=0)
    df = means.shape[0] - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        i2 = np.where(q > 0, np.maximum(0.0, (q - df) / q), 0.0)
    return {"q": q, "df": np.full(q.shape, df), "p_value": chi2.sf(q, df), "i2": i2}


def bounds_aware_cv(means: np.ndarray, bounds: list[tuple[float, float] | None] | None = None
                    ) -> np.ndarray:
    """Coefficient of variation of shard means (K, d), as the reference computes it.

    sd over shards / max(|mean|, 1 % of the bound range) where a coordinate has finite
    bounds (so near-zero parameters are not inflated), else / max(|mean|, 1e-10).
    The reference warns above 0.5 and aborts above 1.0.
    """
    sd = means.std(axis=0, ddof=1) if means.shape[0] > 1 else np.zeros(means.shape[1])
    scale = np.maximum(np.abs(means.mean(axis=0)), CV_TINY)
    for j, b in enumerate(bounds or []):
        if b is not None and np.isfinite(b[0]) and np.isfinite(b[1]):
            scale[j] = max(scale[j], CV_RANGE_FRACTION * (b[1] - b[0]))
    return sd / scale


def shard_shape(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample skewness and excess kurtosis (K, d) of each shard's draws (K, S, d)."""
    return skew(draws, axis=1), kurtosis(draws, axis=1, fisher=True)


def binned_kde(z: np.ndarray, points: int = MODE_GRID_POINTS) -> np.ndarray:
    """Gaussian KDE of standardised 1-D draws on an even grid over their range (Scott's
    bandwidth n^(-1/5)), by histogram and convolution: O(n + points^2), no scipy loop."""
    counts, edges = np.histogram(z, bins=points)
    step = edges[1] - edges[0]
    h = z.size ** (-1.0 / 5.0)
    half = int(np.ceil(4 * h / step)) if step > 0 else 0
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) * step / h) ** 2)
    padded = np.pad(counts.astype(float), half)
    return np.convolve(padded, kernel, mode="same")[half:half + points] if half else counts * 1.0


def count_modes(x: np.ndarray) -> int:
    """Number of clear modes of 1-D draws: KDE peaks of at least MODE_MIN_HEIGHT of the
    highest, separated from their neighbour by a dip below MODE_MAX_DIP of the lower."""
    x = x[:: max(1, -(-x.size // MODE_MAX_DRAWS))]
    sd = x.std()
    if not np.isfinite(sd) or sd == 0:
        return 1
    dens = binned_kde((x - x.mean()) / sd)
    inner = (dens[1:-1] > dens[:-2]) & (dens[1:-1] >= dens[2:])
    peaks = [i + 1 for i in np.flatnonzero(inner) if dens[i + 1] >= MODE_MIN_HEIGHT * dens.max()]
    modes = 1 if peaks else 0
    for a, b in pairwise(peaks):
        if dens[a:b + 1].min() < MODE_MAX_DIP * min(dens[a], dens[b]):
            modes += 1
    return max(modes, 1)


def shard_bimodality(draws: np.ndarray) -> np.ndarray:
    """(K, d) bool: shard k's draws of coordinate j have two or more clear modes."""
    k, _, d = draws.shape
    return np.array([[count_modes(draws[i, :, j]) >= 2 for j in range(d)] for i in range(k)])


def _bounds_of(transform: Any, shape: tuple[int, ...]) -> list[list[float | None]]:
    support = transform.codomain
    lo = np.broadcast_to(np.asarray(getattr(support, "lower_bound", -np.inf), float), shape)
    hi = np.broadcast_to(np.asarray(getattr(support, "upper_bound", np.inf), float), shape)
    as_json = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731
    return [[as_json(a), as_json(b)] for a, b in zip(lo.ravel(), hi.ravel(), strict=True)]


def constrained_shard_means(layout: Any, shard_draws: np.ndarray) -> dict[str, Any]:
    """Per-shard means of the constrained parameters, their names and support bounds.

    layout: a :class:`shardmc.core.params.ParamLayout`; shard_draws: unconstrained (K, C, S, d).
    JSON-able (None for an infinite bound), for the provenance of a fit.
    """
    from shardmc.core import params as P
    flat = flat_shards(shard_draws)
    means = [P.flatten_constrained(layout, P.constrain(layout, x)).mean(axis=0) for x in flat]
    coords, bounds = [], []
    for name, shape, t in zip(layout.names, layout.constrained_shapes, layout.transforms,
                              strict=True):
        coords.extend([name] if shape == () else
                      [f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(shape)])
        bounds.extend(_bounds_of(t, shape))
    return {"coords": coords, "means": np.asarray(means).tolist(), "bounds": bounds}
