"""laminar_flow on dense frame rows: one fused pass for the value, one for its gradient.

sinc² of the shear-phase difference does not factor, so every row entry is evaluated
(row r: angle φ, frame i; column j > i)::

    g_rj = exp(−(L_j − L_i)) · S(x_rj),   x_rj = k_φ (Γ_j − Γ_i),
    SS_r = Σ_j w_rj (y'_rj − δ_r − con_r g_rj)²,

with L = q² ∫J dt, Γ = ∫γ̇ dt, k_φ = ½ q h cos(φ − φ0) (divided by π under the "reference"
convention) and S = sinc² ("published") or sinc⁴ ("reference"). What it buys over the
generic broadcast (:func:`shardmc.xpcs.row_likelihood.dense_sum_squares`):

* sin x and cos x come from per-angle frame tables, sin(a_j − a_i) = sin a_j cos a_i −
  cos a_j sin a_i with a = kΓ, so an entry costs one exponential and a few multiplies
  (XLA's CPU sine costs ~5 ns, its exponential ~0.5 ns);
* the reverse pass is written by hand (:func:`laminar_row_sums` is a ``custom_vjp``):
  the forward keeps two (R, C) arrays, e·g and e·exp(−ΔL)·S'(x) (e = w (y' − μ')), and
  the backward is two row-weighted column sums and a few row sums — where autodiff of
  the broadcast expression materialises a dozen (R, C) intermediates.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from shardmc.xpcs.physics import (
    Geometry,
    cumulative_trapezoid,
    diffusion_integral,
    power_law,
    rate_times,
)

#: |x| below which sinc and its derivative use their series 1 − x²/6 + x⁴/120 and
#: x (x²/30 − 1/3) (truncation < x⁶/5040 ≈ 2e−16 here). Above it the table-based sine
#: carries an absolute error ~1e−16 · |a| (a = kΓ, up to ~10³ rad), relative ~1e−12 at
#: the threshold.
SINC_TABLE_SERIES_THRESHOLD = 1e-2


def _sinc_power(x: Any, sin_x: Any, cos_x: Any, power: int) -> tuple[Any, Any]:
    """(sinc(x)^power, its derivative in x), sinc = sin/x with its series near 0."""
    small = jnp.abs(x) < SINC_TABLE_SERIES_THRESHOLD
    safe = jnp.where(small, 1.0, x)
    x2 = x * x
    s = jnp.where(small, 1.0 - x2 / 6.0 + x2 * x2 / 120.0, sin_x / safe)
    ds = jnp.where(small, x * (x2 / 30.0 - 1.0 / 3.0), (cos_x - s) / safe)
    if power == 2:
        return s * s, 2.0 * s * ds
    s2 = s * s
    return s2 * s2, 4.0 * s2 * s * ds


def _tables(shear: Any, k: Any, data: tuple, n_t: int) -> tuple:
    """The row block's mask, ΔΓ, x and sin x, cos x from per-angle tables, (R, C) each."""
    y, _, phi_idx, t1_idx = data
    cols = jnp.arange(y.shape[1])[None, :]
    mask = (cols > t1_idx[:, None]) & (cols < n_t)
    phase = k[:, None] * shear[None, :]  # (n_phi, C): a = kΓ
    sin_a, cos_a = jnp.sin(phase), jnp.cos(phase)
    # the row's angle by a one-hot product: a gather of (R, C) rows is fused unvectorised
    one_hot = (phi_idx[:, None] == jnp.arange(k.shape[0])[None, :]).astype(y.dtype)
    sin_j, cos_j = one_hot @ sin_a, one_hot @ cos_a  # (R, C)
    sin_i, cos_i = sin_a[phi_idx, t1_idx][:, None], cos_a[phi_idx, t1_idx][:, None]
    d_shear = jnp.where(mask, shear[None, :] - shear[t1_idx][:, None], 0.0)
    x = k[phi_idx][:, None] * d_shear
    return mask, d_shear, x, sin_j * cos_i - cos_j * sin_i, cos_j * cos_i + sin_j * sin_i


def _decay(decay: Any, mask: Any, t1_idx: Any) -> Any:
    """exp(−(L_j − L_i)) on the row block (1 off the data entries), (R, C)."""
    return jnp.exp(-jnp.where(mask, decay[None, :] - decay[t1_idx][:, None], 0.0))


def _weighted(mask: Any, weight: Any, values: Any) -> Any:
    return (mask.astype(values.dtype) if weight is None else weight) * values


@partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def laminar_row_sums(decay: Any, shear: Any, k: Any, contrast_r: Any, delta_r: Any,
                     data: tuple, n_t: int, power: int) -> Any:
    """SS_r (R,) from the padded tables L = q²C (C,), Γ (C,), k (n_phi,), the per-row
    contrast and centred offset δ_r (R,); ``data`` = (y', weight or None, phi_idx,
    t1_idx), fixed; n_t frames; ``power`` 2 or 4 (the shear convention)."""
    y, weight, _, t1_idx = data
    mask, _, x, sin_x, cos_x = _tables(shear, k, data, n_t)
    g = _decay(decay, mask, t1_idx) * _sinc_power(x, sin_x, cos_x, power)[0]
    r = y - delta_r[:, None] - contrast_r[:, None] * g
    return jnp.sum(_weighted(mask, weight, r * r), axis=1)


def _fwd(decay, shear, k, contrast_r, delta_r, data, n_t, power):
    """The value and the residuals of :func:`_bwd`. Each (R, C) array is its own buffer,
    computed from the previous one (``optimization_barrier``): XLA on CPU otherwise
    fuses sibling outputs into one multi-output loop, measured 4x slower than the parts."""
    barrier = jax.lax.optimization_barrier
    y, weight, _, t1_idx = data
    mask, _, x, sin_x, cos_x = _tables(shear, k, data, n_t)
    e_decay = barrier(_decay(decay, mask, t1_idx))
    g = barrier(e_decay * _sinc_power(x, sin_x, cos_x, power)[0])
    e = barrier(_weighted(mask, weight, y - delta_r[:, None] - contrast_r[:, None] * g))
    e_dx = barrier(e * e_decay * _sinc_power(x, sin_x, cos_x, power)[1])
    e_g = barrier(e * g)
    ones = jnp.ones(y.shape[1])
    sum_e_dx = e_dx @ ones
    # Σ_j e_dx (Γ_j − Γ_i) as a matrix-vector product (e_dx is 0 off the data entries)
    sums = (e @ ones, e_g @ ones, sum_e_dx, e_dx @ shear - shear[t1_idx] * sum_e_dx)
    if weight is None:
        value = jnp.sum(e * e, axis=1)
    else:
        value = jnp.sum(jnp.where(mask, e * e / jnp.where(mask, weight, 1.0), 0.0), axis=1)
    return value, (e_g, e_dx, sums, k, contrast_r, data[2], t1_idx)


def _bwd(n_t, power, residuals, ct):
    e_g, e_dx, (sum_e, sum_eg, sum_edx, sum_edx_shear), k, contrast_r, phi_idx, t1_idx = residuals
    n_cols = e_g.shape[1]
    c = -2.0 * ct * contrast_r  # ∂SS_r/∂g_rj = −2 con_r e_rj, times the row cotangent
    k_r = k[phi_idx]
    # g = exp(−(L_j − L_i)) S(k (Γ_j − Γ_i)): column j and the row's frame i.
    d_decay = jax.ops.segment_sum(c * sum_eg, t1_idx, num_segments=n_cols) - c @ e_g
    d_shear = (c * k_r) @ e_dx - jax.ops.segment_sum(c * k_r * sum_edx, t1_idx,
                                                    num_segments=n_cols)
    d_k = jax.ops.segment_sum(c * sum_edx_shear, phi_idx, num_segments=k.shape[0])
    return d_decay, d_shear, d_k, -2.0 * ct * sum_eg, -2.0 * ct * sum_e, None


laminar_row_sums.defvjp(_fwd, _bwd)


def laminar_sum_squares(params: Mapping[str, Any], contrast: Any, offset: Any,
                        geometry: Geometry, rows: Mapping[str, Any], *,
                        shear_convention: str = "published") -> Any:
    """SS_r (R,) of laminar_flow on the row block (module docstring)."""
    phi_idx, t1_idx, y = rows["phi_idx"], rows["t1_idx"], rows["c2"]
    n_t, n_cols = geometry.t.shape[0], y.shape[1]

    def padded(table: Any) -> Any:
        return jnp.pad(table, (0, n_cols - n_t), mode="edge")

    log_t = jnp.log(rate_times(geometry.t, geometry.dt))
    gamma_dot = power_law(log_t, params["gamma_dot_0"], params["beta"]) + params["gamma_dot_offset"]
    if shear_convention == "reference":
        gamma_dot = jnp.maximum(gamma_dot, 0.0)
    shear = padded(cumulative_trapezoid(gamma_dot, geometry.t))
    decay = padded((geometry.q * geometry.q) * diffusion_integral(params, geometry))
    k = (0.5 * geometry.q * geometry.gap) * jnp.cos(jnp.deg2rad(geometry.phi - params["phi0"]))
    if shear_convention == "reference":
        k = k / jnp.pi
    data = (y, rows.get("weight"), phi_idx, t1_idx)
    return laminar_row_sums(decay, shear, k, contrast[phi_idx], offset[phi_idx] - rows["c2_mean"],
                            data, n_t, 2 if shear_convention == "published" else 4)
