"""Two-time data as dense frame rows: the engine's "point" is one row (angle, t1).

A row holds every later frame t2 > t1 of one angle's upper triangle (diagonal excluded,
as :func:`shardmc.xpcs.data.pool`), stored densely over all column frames so that the
likelihood needs no per-point gather or scatter (:mod:`shardmc.xpcs.row_likelihood`).
Columns are padded to a multiple of :data:`ROW_BLOCK` frames; entries with t2 <= t1 or
past the last frame are 0 and carry no weight.

Keys (R = n_phi (n_t − 1) rows, C = padded column count):

* ``phi_idx``, ``t1_idx`` (R,) int32: the row's angle and frame;
* ``c2`` (R, C): c2 − the row's (weighted) mean on t2 > t1, 0 elsewhere. Centring makes
  the expanded sum of squares of the structured kernels lose no digits to cancellation;
* ``c2_mean`` (R,): that mean; ``c2_ss`` (R,): Σ w (c2 − mean)² over the row;
* with a known noise sigma: ``weight`` (R, C) = 1/σ² on t2 > t1 (0 elsewhere),
  ``weight_sum`` (R,) = Σ weight and ``log_sigma`` (R,) = Σ log σ over the row.

XPCS fits shard rows ``"stratified"`` by angle (random rows within each angle;
:func:`shardmc.core.sharding.assign_points`, docs/xpcs.md).
"""

from __future__ import annotations

import numpy as np

from shardmc.xpcs.data import XPCSData

#: Frames per column block of the structured kernels; row arrays are padded to a multiple.
ROW_BLOCK = 32
#: Keys of the row layout (``weight*`` and ``log_sigma`` only with a known sigma).
ROW_KEYS = ("phi_idx", "t1_idx", "c2", "c2_mean", "c2_ss")
KNOWN_NOISE_ROW_KEYS = ("weight", "weight_sum", "log_sigma")


def padded_columns(n_t: int, block: int = ROW_BLOCK) -> int:
    """Columns of the row arrays: n_t rounded up to a multiple of ``block``."""
    return -(-n_t // block) * block


def row_mask(t1_idx: np.ndarray, n_t: int, n_cols: int) -> np.ndarray:
    """(R, n_cols) bool: the row's data entries, t1 < t2 <= n_t − 1."""
    cols = np.arange(n_cols)[None, :]
    return (cols > np.asarray(t1_idx)[:, None]) & (cols < n_t)


def row_arrays(data: XPCSData, *, known_noise: bool = False,
               block: int = ROW_BLOCK) -> dict[str, np.ndarray]:
    """The row layout of ``data`` (module docstring); rows in angle-major, t1 order."""
    n_phi, n_t = data.n_phi, data.n_t
    n_cols = padded_columns(n_t, block)
    phi_idx = np.repeat(np.arange(n_phi, dtype=np.int32), n_t - 1)
    t1_idx = np.tile(np.arange(n_t - 1, dtype=np.int32), n_phi)
    mask = row_mask(t1_idx, n_t, n_cols)
    values = np.zeros((phi_idx.size, n_cols))
    values[:, :n_t] = data.c2[phi_idx, t1_idx, :]
    if known_noise:
        sigma = np.ones((phi_idx.size, n_cols))
        sigma[:, :n_t] = data.sigma[phi_idx, t1_idx, :]
        weight = np.where(mask, 1.0 / np.where(mask, sigma, 1.0) ** 2, 0.0)
    else:
        weight = mask.astype(np.float64)
    weight_sum = weight.sum(axis=1)
    mean = (weight * values).sum(axis=1) / weight_sum
    centred = np.where(mask, values - mean[:, None], 0.0)
    out = {"phi_idx": phi_idx, "t1_idx": t1_idx, "c2": centred, "c2_mean": mean,
           "c2_ss": (weight * centred**2).sum(axis=1)}
    if known_noise:
        out.update(weight=weight, weight_sum=weight_sum,
                   log_sigma=np.where(mask, np.log(np.where(mask, sigma, 1.0)), 0.0).sum(axis=1))
    return out


def row_observations(rows: dict[str, np.ndarray], n_t: int) -> np.ndarray:
    """Data points in each row, n_t − 1 − t1 (R,) int64."""
    return (n_t - 1 - np.asarray(rows["t1_idx"], dtype=np.int64))


def rows_to_points(rows: dict[str, np.ndarray], n_t: int) -> dict[str, np.ndarray]:
    """The per-point arrays (:func:`shardmc.xpcs.data.pool` keys) of a set of rows, in row
    order: what the point-list kernel evaluates for the same data."""
    t1_idx = np.asarray(rows["t1_idx"])
    mask = row_mask(t1_idx, n_t, rows["c2"].shape[1])
    r, t2 = np.nonzero(mask)
    out = {"phi_idx": np.asarray(rows["phi_idx"])[r].astype(np.int32),
           "t1_idx": t1_idx[r].astype(np.int32), "t2_idx": t2.astype(np.int32),
           "c2": rows["c2"][r, t2] + rows["c2_mean"][r]}
    if "weight" in rows:
        out["sigma"] = 1.0 / np.sqrt(rows["weight"][r, t2])
    return out
