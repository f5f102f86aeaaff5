"""Gaussian log-likelihood of dense frame rows (:mod:`shardmc.xpcs.row_layout`).

Every kernel returns the per-row weighted sum of squares SS_r = Σ_j w_rj (y_rj − μ_rj)²
over the row's data entries (t2 > t1), shape (R,); :func:`row_log_likelihood` turns it
into the per-row Gaussian log density, equal to the point-list model's sum of
``Normal(μ, σ).log_prob`` over the same points.

* ``static`` (structured): with J >= 0 the diffusion integral C is non-decreasing, so
  exp(−q²(C_j − C_i)) factors into per-frame terms. With y centred per row
  (y' = y − m_r, μ − m_r = δ_r + contrast · g, δ_r = offset − m_r),

      SS_r = Σ w y'² − 2 contrast T1_r + δ_r² Σ w + 2 δ_r contrast T0_r + contrast² T00_r,
      T1 = Σ_j w y' g,  T0 = Σ_j w g,  T00 = Σ_j w g²,

  and each T is a :func:`decayed_row_sums`: one contraction of the fixed data rows with a
  per-column vector, per-block factors and cumulative sums over frames — O(n_t + R·B)
  exponentials per evaluation instead of one per point, no gather/scatter of points.
* ``two_component`` (structured): the same expansion with its c2 a short sum of
  factored terms (:mod:`shardmc.xpcs.heterodyne_rows`);
* ``laminar_flow``: sinc² of the shear-phase difference does not factor; evaluated on the
  row block with table-based sines and a hand-written reverse pass
  (:mod:`shardmc.xpcs.laminar_rows`);
* every physics (``dense``): μ broadcast over the row block (:class:`RowIndex`), fused
  elementwise, no gather/scatter per point.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from shardmc.xpcs.batch_cond import uniform_cond
from shardmc.xpcs.heterodyne_rows import two_component_sum_squares
from shardmc.xpcs.laminar_rows import laminar_sum_squares
from shardmc.xpcs.physics import (
    Geometry,
    RowIndex,
    c2_mean,
    diffusion_integral,
)
from shardmc.xpcs.row_layout import ROW_BLOCK

#: log(2π), for the Gaussian normalising constant.
LOG_2PI = float(jnp.log(2.0 * jnp.pi))
#: Largest span of the decay exponent L = q² C (dimensionless) over the frames for which
#: one reference frame serves every row: the factors exp(L_i − L_0) <= e^600 and
#: exp(−(L_j − L_0)) >= e^−600 are normal float64 numbers (overflow at ~e^709).
SINGLE_REFERENCE_SPAN = 600.0


def _blocks(table: Any, n_cols: int, block: int) -> Any:
    """A per-frame table (n_t,) padded by its last value to n_cols, as (n_cols/block, block)."""
    padded = jnp.pad(table, (0, n_cols - table.shape[0]), mode="edge")
    return padded.reshape(n_cols // block, block)


def decayed_row_sums(values: Any, decay_integral: Any, t1_idx: Any, n_cols: int,
                     block: int = ROW_BLOCK) -> Any:
    """S_r = Σ_{j > t1_r} values[r, j] · exp(−(L_j − L_{t1_r})) for every row, (R,).

    decay_integral: L (n_t,), non-decreasing (e.g. q² C); values: (R, n_cols), zero where
    j <= t1_r, or None (all ones: S then depends on t1 only and is computed per frame by
    :func:`_frame_sums`). With data, while L spans at most SINGLE_REFERENCE_SPAN,
    exp(−(L_j − L_i)) = exp(−(L_j − L_0)) · exp(L_i − L_0) with both factors finite, so S is
    one matrix–vector product of the data (:func:`_single_reference_sums`); past that, the
    block-factored sums of :func:`_blocked_sums`, exact for any L.
    """
    if values is None:
        return _frame_sums(decay_integral, n_cols, block)[t1_idx]
    return _data_sums(values, decay_integral, t1_idx)


def _data_sums_dispatch(values: Any, decay_integral: Any, t1_idx: Any) -> Any:
    single = decay_integral[-1] - decay_integral[0] <= SINGLE_REFERENCE_SPAN
    return uniform_cond(single, _single_reference_sums, _blocked_sums, values, decay_integral,
                        t1_idx)


@jax.custom_vjp
def _data_sums(values: Any, decay_integral: Any, t1_idx: Any) -> Any:
    """:func:`decayed_row_sums` with data; differentiable in ``decay_integral`` only (the
    data are fixed). A custom VJP so that reverse mode keeps no residuals of the branch not
    taken (``lax.cond`` under ``grad`` otherwise materialises both, measured 18x slower);
    :func:`~shardmc.xpcs.batch_cond.uniform_cond` so that vmapped chains run one branch."""
    return _data_sums_dispatch(values, decay_integral, t1_idx)


def _data_sums_fwd(values: Any, decay_integral: Any, t1_idx: Any) -> tuple[Any, tuple]:
    return _data_sums_dispatch(values, decay_integral, t1_idx), (values, decay_integral, t1_idx)


def _data_sums_bwd(residuals: tuple, cotangent: Any) -> tuple:
    values, decay_integral, t1_idx = residuals

    def pullback(fn):
        def run(values, decay, t1, ct):
            return jax.vjp(lambda d: fn(values, d, t1), decay)[1](ct)[0]
        return run

    single = decay_integral[-1] - decay_integral[0] <= SINGLE_REFERENCE_SPAN
    grad = uniform_cond(single, pullback(_single_reference_sums), pullback(_blocked_sums),
                        values, decay_integral, t1_idx, cotangent)
    return None, grad, None


_data_sums.defvjp(_data_sums_fwd, _data_sums_bwd)


def _single_reference_sums(values: Any, decay_integral: Any, t1_idx: Any) -> Any:
    """S_r from one reference frame: exp(L_i − L_0) · Σ_j values[r, j] exp(−(L_j − L_0)).

    Valid while L spans <= SINGLE_REFERENCE_SPAN (the clip only keeps the branch finite
    when ``lax.cond`` traces it for a larger span)."""
    n_cols = values.shape[1]
    padded = jnp.pad(decay_integral, (0, n_cols - decay_integral.shape[0]), mode="edge")
    relative = jnp.minimum(padded - padded[0], SINGLE_REFERENCE_SPAN)
    return jnp.exp(relative[t1_idx]) * (values @ jnp.exp(-relative))


def _blocked_sums(values: Any, decay_integral: Any, t1_idx: Any,
                  block: int = ROW_BLOCK) -> Any:
    """S_r by block factors, for any non-decreasing L. Columns split into blocks of
    ``block`` frames; for row frame i in block I and column j in a later block J,

        exp(−(L_j − L_i)) = exp(−(L_end(I) − L_i)) · exp(−(L_start(J) − L_end(I)))
                            · exp(−(L_j − L_start(J))),

    three factors each <= 1, so nothing overflows, and a factor underflows only where the
    true value is below exp(−745). The block-I columns are evaluated directly (R · block
    exponentials). The off-block part is one contraction of ``values`` with the per-column
    factors (R · n_cols multiply-adds) and an (R, n_blocks) weighted sum.
    """
    n_cols = values.shape[1]
    lb = _blocks(decay_integral, n_cols, block)
    first, last = lb[:, 0], lb[:, -1]
    n_blocks = lb.shape[0]
    v = jnp.exp(-(lb - first[:, None]))  # (n_blocks, block), <= 1
    later = jnp.arange(n_blocks)[None, :] > jnp.arange(n_blocks)[:, None]  # J > I
    g = jnp.where(later, jnp.exp(-jnp.where(later, first[None, :] - last[:, None], 0.0)), 0.0)
    own = t1_idx // block
    l_flat = lb.reshape(-1)
    u = jnp.exp(-(last[own] - l_flat[t1_idx]))  # (R,), <= 1
    rows = values.shape[0]
    partial = jnp.einsum("rjb,jb->rj", values.reshape(rows, n_blocks, block), v)
    off_block = u * jnp.sum(g[own] * partial, axis=1)
    cols = own[:, None] * block + jnp.arange(block)[None, :]  # (R, block)
    after = cols > t1_idx[:, None]
    diag = jnp.exp(-jnp.where(after, lb[own] - l_flat[t1_idx][:, None], 0.0))
    diag_values = jnp.take_along_axis(values, cols, axis=1)
    return off_block + jnp.sum(jnp.where(after, diag_values * diag, 0.0), axis=1)


def _frame_sums(decay_integral: Any, n_cols: int, block: int) -> Any:
    """Σ_{i < j < n_t} exp(−(L_j − L_i)) for every frame i < n_cols (0 past n_t), (n_cols,)."""
    n_t = decay_integral.shape[0]
    lb = _blocks(decay_integral, n_cols, block)
    first, last = lb[:, 0], lb[:, -1]
    n_blocks = lb.shape[0]
    valid = (jnp.arange(n_cols) < n_t).reshape(n_blocks, block)
    v = jnp.where(valid, jnp.exp(-(lb - first[:, None])), 0.0)
    later = jnp.arange(n_blocks)[None, :] > jnp.arange(n_blocks)[:, None]
    g = jnp.where(later, jnp.exp(-jnp.where(later, first[None, :] - last[:, None], 0.0)), 0.0)
    beyond = g @ v.sum(axis=1)  # (n_blocks,): Σ over later blocks, relative to block end
    u = jnp.exp(-(last[:, None] - lb))  # (n_blocks, block)
    # within the own block: Σ_{b' > b} exp(−(L_b' − L_b)) per frame b, a (block, block) sum
    after = jnp.arange(block)[None, :] > jnp.arange(block)[:, None]
    diff = jnp.where(after[None], lb[:, None, :] - lb[:, :, None], 0.0)
    own = jnp.sum(jnp.where(after[None] & valid[:, None, :], jnp.exp(-diff), 0.0), axis=2)
    return (u * beyond[:, None] + own).reshape(-1)


def static_sum_squares(params: Mapping[str, Any], contrast: Any, offset: Any,
                       geometry: Geometry, rows: Mapping[str, Any]) -> Any:
    """SS_r of the static model by the factored expansion (module docstring), (R,)."""
    phi_idx, t1_idx, y = rows["phi_idx"], rows["t1_idx"], rows["c2"]
    n_cols = y.shape[1]
    decay = (geometry.q * geometry.q) * diffusion_integral(params, geometry)
    weight = rows.get("weight")
    con, delta = contrast[phi_idx], offset[phi_idx] - rows["c2_mean"]
    t1 = decayed_row_sums(y if weight is None else weight * y, decay, t1_idx, n_cols)
    t0 = decayed_row_sums(weight, decay, t1_idx, n_cols)
    t00 = decayed_row_sums(weight, 2.0 * decay, t1_idx, n_cols)
    w_sum = (geometry.t.shape[0] - 1 - t1_idx) if weight is None else rows["weight_sum"]
    return (rows["c2_ss"] - 2.0 * con * t1 + delta * delta * w_sum
            + 2.0 * delta * con * t0 + con * con * t00)


def _masked_row_sums(y: Any, mean: Any, t1_idx: Any, n_t: int, weight: Any) -> Any:
    """Σ_j w (y − mean)² over each row's data entries (t1 < j < n_t), (R,)."""
    cols = jnp.arange(y.shape[1])[None, :]
    mask = (cols > t1_idx[:, None]) & (cols < n_t)
    sq = jnp.where(mask, (y - mean) ** 2, 0.0)
    return jnp.sum(sq if weight is None else weight * sq, axis=1)


def dense_sum_squares(physics: str, params: Mapping[str, Any], contrast: Any, offset: Any,
                      geometry: Geometry, rows: Mapping[str, Any], *,
                      shear_convention: str = "published") -> Any:
    """SS_r of any physics with μ broadcast over the row block, (R,)."""
    phi_idx, t1_idx, y = rows["phi_idx"], rows["t1_idx"], rows["c2"]
    index = RowIndex(phi_idx, t1_idx, y.shape[1])
    centred_offset = offset[phi_idx] - rows["c2_mean"]  # μ − m_r = (offset − m_r) + ...
    mean = c2_mean(physics, params, contrast, jnp.zeros_like(offset), geometry, index,
                   shear_convention=shear_convention) + centred_offset[:, None]
    return _masked_row_sums(y, mean, t1_idx, geometry.t.shape[0], rows.get("weight"))


def row_sum_squares(physics: str, params: Mapping[str, Any], contrast: Any, offset: Any,
                    geometry: Geometry, rows: Mapping[str, Any], *,
                    shear_convention: str = "published", kernel: str = "auto") -> Any:
    """SS_r (R,) by the structured kernel where one exists (``kernel="auto"``), or by the
    dense one (``kernel="dense"``)."""
    if kernel == "auto" and physics == "static":
        return static_sum_squares(params, contrast, offset, geometry, rows)
    if kernel == "auto" and physics == "laminar_flow":
        return laminar_sum_squares(params, contrast, offset, geometry, rows,
                                   shear_convention=shear_convention)
    if kernel == "auto" and physics == "two_component":
        return two_component_sum_squares(params, contrast, offset, geometry, rows)
    return dense_sum_squares(physics, params, contrast, offset, geometry, rows,
                             shear_convention=shear_convention)


def row_log_likelihood(sum_squares: Any, rows: Mapping[str, Any], n_t: int,
                       sigma: Any = None) -> Any:
    """Per-row Gaussian log density (R,): −½ SS/σ² − n log σ − ½ n log 2π with a per-angle
    ``sigma`` (n_phi,), or −½ SS − Σ log σ − ½ n log 2π with the rows' known sigma."""
    n_obs = n_t - 1 - rows["t1_idx"]
    if sigma is None:
        return -0.5 * sum_squares - rows["log_sigma"] - 0.5 * LOG_2PI * n_obs
    s = sigma[rows["phi_idx"]]
    return -0.5 * sum_squares / (s * s) - n_obs * jnp.log(s) - 0.5 * LOG_2PI * n_obs
