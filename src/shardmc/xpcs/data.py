"""XPCS two-time data: the validated container, pooling to per-point arrays, data summaries.

:class:`XPCSData` holds per-angle symmetric matrices c2 (n_phi, n_t, n_t) on frame times t.
:func:`pool` turns it into the per-point arrays shardmc samples over, using the upper
triangle only (t1 < t2, diagonal excluded): the matrix is symmetric, so both triangles
would count each observation twice (the reference's mistake 1).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from shardmc.errors import ShardMCInputError
from shardmc.xpcs.physics import DEFAULT_GAP, RATE_TIME_FLOOR_FRACTION

#: Fraction of the lag range used by the constant scaling modes (REFERENCE.md): offset =
#: OFFSET_QUANTILE of c2 at the largest lags, contrast = CONTRAST_QUANTILE at the smallest
#: lags minus offset.
SCALING_LAG_FRACTION = 0.2
OFFSET_QUANTILE = 0.10
CONTRAST_QUANTILE = 0.90


@dataclass(frozen=True, eq=False)
class XPCSData:
    """Two-time correlation data of one q.

    c2: (n_phi, n_t, n_t) symmetric matrices; t: (n_t,) frame times (s), increasing, from
    the time origin (t[0] = :attr:`t0`, the time of the first frame, docs/xpcs.md);
    q: wavevector (Å⁻¹); phi: (n_phi,) distinct angles (degrees); dt: frame time (s), which
    sets the rate-time floor dt/2 (the grid t may be non-uniform, e.g. subsampled);
    sigma: optional known noise scale, same shape as c2; gap: rheometer gap h (Å).
    """

    c2: np.ndarray
    t: np.ndarray
    q: float
    phi: np.ndarray
    dt: float
    sigma: np.ndarray | None = None
    gap: float = DEFAULT_GAP

    def __post_init__(self) -> None:
        validate(self)

    @property
    def n_phi(self) -> int:
        return int(self.c2.shape[0])

    @property
    def n_t(self) -> int:
        return int(self.c2.shape[1])

    @property
    def num_points(self) -> int:
        """Points after pooling (upper triangle, diagonal excluded)."""
        return self.n_phi * self.n_t * (self.n_t - 1) // 2

    @property
    def t0(self) -> float:
        """Time of the first frame (s): the time origin the fit assumes (docs/xpcs.md)."""
        return float(self.t[0])

    @property
    def rate_time_floor(self) -> float:
        """dt/2 (s): power-law rates are evaluated at max(t, dt/2)."""
        return RATE_TIME_FLOOR_FRACTION * self.dt

    @property
    def floored_frames(self) -> int:
        """Frames whose time lies below :attr:`rate_time_floor` (their rates are floored)."""
        return int(np.count_nonzero(self.t < self.rate_time_floor))

    def with_t0(self, t0: float) -> XPCSData:
        """A copy on the same grid shifted so that the first frame sits at ``t0`` (s, >= 0)."""
        t0 = float(t0)
        if not (np.isfinite(t0) and t0 >= 0):
            raise ShardMCInputError(f"t0: expected a finite time >= 0 (s), found {t0}")
        return replace(self, t=self.t - self.t[0] + t0)

    def select_angles(self, indices: Any) -> XPCSData:
        """A copy holding only the angles at ``indices``."""
        idx = np.asarray(indices, dtype=int)
        sigma = None if self.sigma is None else self.sigma[idx]
        return replace(self, c2=self.c2[idx], phi=self.phi[idx], sigma=sigma)

    def select_frames(self, start: int, stop: int) -> XPCSData:
        """A copy holding frames start..stop-1 (0-based, Python slice)."""
        sl = slice(start, stop)
        sigma = None if self.sigma is None else self.sigma[:, sl, sl]
        return replace(self, c2=self.c2[:, sl, sl], t=self.t[sl], sigma=sigma)


def _float_array(value: Any, field: str, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ShardMCInputError(f"XPCSData.{field}: expected a numeric array, found "
                                f"{type(value).__name__}") from exc
    if arr.ndim != ndim:
        raise ShardMCInputError(f"XPCSData.{field}: expected {ndim}-D array, found shape "
                                f"{arr.shape}")
    return arr


def _first_bad(arr: np.ndarray) -> str:
    bad = np.argwhere(~np.isfinite(arr))
    return f"{len(bad)} non-finite value(s), first at index {tuple(int(i) for i in bad[0])}"


def _positive_scalar(value: Any, field: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise ShardMCInputError(f"XPCSData.{field}: expected a number, found {value!r}") from exc
    if not (np.isfinite(x) and x > 0):
        raise ShardMCInputError(f"XPCSData.{field}: expected a finite value > 0, found {x}")
    return x


def validate(data: XPCSData) -> None:
    """Check shapes, finiteness, grid and angles; raise ShardMCInputError naming the field."""
    c2 = _float_array(data.c2, "c2", 3)
    if c2.shape[1] != c2.shape[2]:
        raise ShardMCInputError(f"XPCSData.c2: expected square matrices (n_phi, n_t, n_t), "
                                f"found shape {c2.shape}")
    if c2.shape[0] < 1:
        raise ShardMCInputError("XPCSData.c2: expected at least one angle, found 0")
    if c2.shape[1] < 2:
        raise ShardMCInputError(f"XPCSData.c2: empty frame range: expected n_t >= 2 frames, "
                                f"found {c2.shape[1]}")
    if not np.all(np.isfinite(c2)):
        raise ShardMCInputError(f"XPCSData.c2: expected finite values, found {_first_bad(c2)}")
    t = _float_array(data.t, "t", 1)
    if t.shape[0] != c2.shape[1]:
        raise ShardMCInputError(f"XPCSData.t: expected {c2.shape[1]} frame times (n_t of c2), "
                                f"found {t.shape[0]}")
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise ShardMCInputError("XPCSData.t: expected finite, strictly increasing frame times")
    phi = _float_array(data.phi, "phi", 1)
    if phi.shape[0] != c2.shape[0]:
        raise ShardMCInputError(f"XPCSData.phi: expected {c2.shape[0]} angles (n_phi of c2), "
                                f"found {phi.shape[0]}")
    if not np.all(np.isfinite(phi)):
        raise ShardMCInputError(f"XPCSData.phi: expected finite angles, found {_first_bad(phi)}")
    uniq, counts = np.unique(phi, return_counts=True)
    if np.any(counts > 1):
        raise ShardMCInputError(f"XPCSData.phi: duplicate angle(s) {uniq[counts > 1].tolist()}")
    dt = _positive_scalar(data.dt, "dt")
    if t[0] < 0:
        raise ShardMCInputError(f"XPCSData.t: expected frame times >= 0, found t[0] = {t[0]}")
    _positive_scalar(data.q, "q")
    _positive_scalar(data.gap, "gap")
    if data.sigma is not None:
        sigma = _float_array(data.sigma, "sigma", 3)
        if sigma.shape != c2.shape:
            raise ShardMCInputError(f"XPCSData.sigma: expected shape {c2.shape} (that of c2), "
                                    f"found {sigma.shape}")
        iu = np.triu_indices(c2.shape[1], k=1)
        upper = sigma[:, iu[0], iu[1]]
        if not (np.all(np.isfinite(upper)) and np.all(upper > 0)):
            raise ShardMCInputError("XPCSData.sigma: expected finite values > 0 above the "
                                    "diagonal")
        object.__setattr__(data, "sigma", sigma)
    for name, value in (("c2", c2), ("t", t), ("phi", phi)):
        object.__setattr__(data, name, value)
    object.__setattr__(data, "dt", dt)
    object.__setattr__(data, "q", float(data.q))
    object.__setattr__(data, "gap", float(data.gap))


def upper_indices(n_phi: int, n_t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(phi_idx, t1_idx, t2_idx) int32 of every upper-triangle point, angle-major order."""
    t1, t2 = np.triu_indices(n_t, k=1)
    m = t1.size
    phi_idx = np.repeat(np.arange(n_phi, dtype=np.int32), m)
    return phi_idx, np.tile(t1.astype(np.int32), n_phi), np.tile(t2.astype(np.int32), n_phi)


def pool(data: XPCSData) -> dict[str, np.ndarray]:
    """Per-point arrays (upper triangle, t1 < t2, diagonal excluded), one entry per point.

    Keys: phi_idx, t1_idx, t2_idx (int32), c2 (float64) and, if data.sigma is set, sigma.
    """
    phi_idx, t1, t2 = upper_indices(data.n_phi, data.n_t)
    out = {"phi_idx": phi_idx, "t1_idx": t1, "t2_idx": t2, "c2": data.c2[phi_idx, t1, t2]}
    if data.sigma is not None:
        out["sigma"] = data.sigma[phi_idx, t1, t2]
    return out


def unpool(values: Any, data: XPCSData, fill: float = np.nan) -> np.ndarray:
    """Per-point values (in :func:`pool` order) back to symmetric (n_phi, n_t, n_t) matrices."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (data.num_points,):
        raise ShardMCInputError(f"values: expected shape ({data.num_points},) (pooled points), "
                                f"found {values.shape}")
    out = np.full((data.n_phi, data.n_t, data.n_t), fill, dtype=np.float64)
    phi_idx, t1, t2 = upper_indices(data.n_phi, data.n_t)
    out[phi_idx, t1, t2] = values
    out[phi_idx, t2, t1] = values
    return out


class Scaling(NamedTuple):
    """Per-angle contrast and offset (n_phi,) estimated from data quantiles."""

    contrast: np.ndarray
    offset: np.ndarray


def estimate_scaling(data: XPCSData) -> Scaling:
    """Per-angle contrast/offset from quantiles (REFERENCE.md, constant modes).

    With lags k = t2_idx − t1_idx in 1..n_t−1 and m = max(1, ceil(0.2 (n_t − 1))) lags:
    offset = 10th percentile of c2 over the m largest lags; contrast = 90th percentile
    over the m smallest lags minus offset, floored at 0.
    """
    n_t = data.n_t
    lag_count = max(1, int(np.ceil(SCALING_LAG_FRACTION * (n_t - 1))))
    t1, t2 = np.triu_indices(n_t, k=1)
    lag = t2 - t1
    small = lag <= lag_count
    large = lag >= n_t - lag_count
    upper = data.c2[:, t1, t2]  # (n_phi, m)
    offset = np.quantile(upper[:, large], OFFSET_QUANTILE, axis=1)
    contrast = np.quantile(upper[:, small], CONTRAST_QUANTILE, axis=1) - offset
    return Scaling(np.maximum(contrast, 0.0), offset)


def reconstruct_half(half: np.ndarray) -> np.ndarray:
    """Full symmetric matrix from an upper-triangle half: half + halfᵀ, diagonal halved."""
    full = half + half.T
    idx = np.diag_indices(half.shape[0])
    full[idx] = full[idx] / 2.0
    return full


def correct_diagonal(c2: np.ndarray) -> np.ndarray:
    """A copy of the matrix (or stack) whose diagonal is the mean of its neighbours."""
    out = np.array(c2, dtype=np.float64, copy=True)
    n = out.shape[-1]
    if n < 2:
        return out
    band = out[..., np.arange(n - 1), np.arange(1, n)]  # c2[i, i+1]
    total = np.zeros((*out.shape[:-2], n))
    total[..., :-1] += band
    total[..., 1:] += band
    norm = np.full(n, 2.0)
    norm[[0, -1]] = 1.0
    out[..., np.arange(n), np.arange(n)] = total / norm
    return out
