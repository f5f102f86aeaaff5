"""Synthetic XPCS data from the same forward model the fits use, with a seed and known truth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from shardmc.errors import ShardMCInputError
from shardmc.xpcs.data import XPCSData, correct_diagonal
from shardmc.xpcs.parameters import PARAMETER_TABLE, model_parameter_names
from shardmc.xpcs.physics import (
    DEFAULT_DT,
    DEFAULT_GAP,
    DEFAULT_Q,
    SHEAR_CONVENTIONS,
    Geometry,
    c2_matrix,
)

#: Default truths: decays over a 10 s window at q = 0.0054 Å⁻¹ with visible aging (α < 0),
#: several shear lobes with a time-dependent rate (laminar_flow: β ≠ 0, since with β = 0 only
#: γ̇0 + γ̇_offset is identifiable), a drifting sample fraction (two_component).
DEFAULT_TRUTH: dict[str, dict[str, float]] = {
    "static": {"D0": 1.0e4, "alpha": -0.3, "D_offset": 500.0},
    "laminar_flow": {"D0": 1.0e4, "alpha": -0.3, "D_offset": 500.0, "gamma_dot_0": 1.0e-4,
                     "beta": 0.5, "gamma_dot_offset": 0.0, "phi0": 2.0},
    "two_component": {"D0_ref": 2.0e4, "alpha_ref": 0.0, "D_offset_ref": 0.0,
                      "D0_sample": 5.0e3, "alpha_sample": 0.0, "D_offset_sample": 0.0,
                      "v0": 50.0, "beta": 0.0, "v_offset": 0.0,
                      "f0": 0.2, "f1": 0.1, "f2": 5.0, "f3": 0.2, "phi0": 0.0},
}
DEFAULT_CONTRAST = 0.3
DEFAULT_OFFSET = 1.0
DEFAULT_NOISE = 0.01


def default_angles(n_angles: int) -> np.ndarray:
    """n_angles evenly spaced angles in [0, 180) degrees."""
    return np.linspace(0.0, 180.0, n_angles, endpoint=False)


def _per_angle(value: Any, n: int, field: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.shape != (n,):
        raise ShardMCInputError(f"{field}: expected a scalar or shape ({n},), found {arr.shape}")
    return arr.copy()


def resolve_truth(physics: str, params: Mapping[str, float] | None) -> dict[str, float]:
    """Default truth of ``physics`` with ``params`` overriding; values must lie in bounds."""
    names = model_parameter_names(physics)
    params = dict(params or {})
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ShardMCInputError(f"params: unknown parameter(s) {unknown} for {physics!r}; "
                                f"expected some of {list(names)}")
    truth = {**DEFAULT_TRUTH[physics], **{k: float(v) for k, v in params.items()}}
    for name, value in truth.items():
        row = PARAMETER_TABLE[name]
        if not row.lower <= value <= row.upper:
            raise ShardMCInputError(f"params[{name!r}]: {value} lies outside the bounds "
                                    f"[{row.lower}, {row.upper}]")
    return truth


def simulate(
    physics: str = "static",
    params: Mapping[str, float] | None = None,
    *,
    n_angles: int = 3,
    n_t: int = 100,
    dt: float = DEFAULT_DT,
    q: float = DEFAULT_Q,
    gap: float = DEFAULT_GAP,
    phi: Sequence[float] | None = None,
    contrast: float | Sequence[float] = DEFAULT_CONTRAST,
    offset: float | Sequence[float] = DEFAULT_OFFSET,
    noise: float | Sequence[float] = DEFAULT_NOISE,
    seed: int = 0,
    shear_convention: str = "published",
    known_sigma: bool = False,
    t0: float = 0.0,
) -> tuple[XPCSData, dict[str, Any]]:
    """Simulated two-time data and its truth.

    Frame times t_k = t0 + k·dt (s), k = 0..n_t−1 (t0 = 0: the first frame at the time
    origin, on the dt/2 rate floor). Gaussian noise of scale ``noise`` (per angle)
    is drawn i.i.d. on the upper triangle and mirrored; the diagonal is the mean of its
    neighbours, as the loaders produce it. ``known_sigma`` stores the noise scale in
    ``data.sigma``. Returns (data, truth) with truth holding the physical parameters,
    contrast, offset and sigma (n_phi,) arrays.
    """
    if shear_convention not in SHEAR_CONVENTIONS:
        raise ShardMCInputError(f"shear_convention: expected one of {SHEAR_CONVENTIONS}, found "
                                f"{shear_convention!r}")
    if n_t < 2 or n_angles < 1:
        raise ShardMCInputError(f"n_t, n_angles: expected n_t >= 2 and n_angles >= 1, found "
                                f"{n_t}, {n_angles}")
    truth = resolve_truth(physics, params)
    angles = default_angles(n_angles) if phi is None else _per_angle(phi, n_angles, "phi")
    contrast_arr = _per_angle(contrast, n_angles, "contrast")
    offset_arr = _per_angle(offset, n_angles, "offset")
    sigma_arr = _per_angle(noise, n_angles, "noise")
    if np.any(sigma_arr < 0):
        raise ShardMCInputError(f"noise: expected values >= 0, found {sigma_arr.tolist()}")
    if not (np.isfinite(t0) and t0 >= 0):
        raise ShardMCInputError(f"t0: expected a finite time >= 0 (s), found {t0}")
    t = t0 + dt * np.arange(n_t, dtype=np.float64)
    with jax.enable_x64(True):
        geometry = Geometry(t, np.float64(dt), np.float64(q), np.float64(gap), angles)
        clean = np.asarray(c2_matrix(physics, truth, contrast_arr, offset_arr, geometry,
                                     shear_convention=shear_convention))
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((n_angles, n_t, n_t)) * sigma_arr[:, None, None]
    eps = np.triu(eps, k=1)
    eps = eps + np.swapaxes(eps, 1, 2)
    c2 = correct_diagonal(clean + eps)
    sigma = np.broadcast_to(sigma_arr[:, None, None], c2.shape).copy() if known_sigma else None
    data = XPCSData(c2=c2, t=t, q=q, phi=angles, dt=dt, sigma=sigma, gap=gap)
    full_truth: dict[str, Any] = {**truth, "contrast": contrast_arr, "offset": offset_arr,
                                  "sigma": sigma_arr}
    return data, full_truth
