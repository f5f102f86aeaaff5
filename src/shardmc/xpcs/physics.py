"""XPCS two-time correlation kernels (pure JAX; run them in float64).

Every kernel evaluates its rates on the frame grid ``t`` (n_t,), integrates them once by a
cumulative trapezoid (O(n_t)) and gathers the interval integrals at each point's
``(t1_idx, t2_idx)``: ``∫_{t1}^{t2} f dt = C[t2_idx] - C[t1_idx]``. The cost is therefore
O(n_t + points), never O(points x n_t).

Units: t, dt in s; q in Å⁻¹; gap h in Å; angles φ, φ0 in degrees; D in Å²/s; γ̇ in s⁻¹;
v in Å/s.

Homodyne (He et al., PNAS 2024; DESIGN.md), with the published shear convention::

    c2 = offset_φ + contrast_φ · exp(−q² ∫J dt) · sinc²(½ q h cos(φ0 − φ) ∫γ̇ dt)

The ``exp(−q² ∫J dt)`` factor *is* the squared field correlation (g1 = exp(−½ q² ∫J dt)),
so for α = 0 and no shear ``c2 = offset + contrast · exp(−q² (D0 + D_offset) |t2 − t1|)``
(no extra factor 2).

Numerical guards (all documented constants below):

* rates are evaluated at ``max(t, dt/2)`` (``rate_times``): J(t) = D0 t^α diverges at
  t = 0 for α < 0; the reference floors t at dt/2 the same way. The trapezoid itself uses
  the true frame times.
* diffusion rates J are floored at 0 (a negative diffusion rate has no meaning and would
  make g1 > 1); the heterodyne velocity is signed; the shear rate γ̇ is signed under the
  published convention (sinc² is even) and floored at 0 under "reference", as homodyne 2.x.
* integrals run from the earlier to the later frame (ordered indices), so every kernel is
  symmetric in (t1, t2).
* no inf · 0 in a gradient: diffusion exponents are <= 0 by construction (exp can only
  underflow to 0, with a 0 gradient); the sample-fraction exponent, which can be large
  and positive, is clipped to [EXP_ARG_MIN, FRACTION_EXP_ARG_MAX].
* ``sinc`` uses a where-trick with a series branch near 0 so its gradient is finite.

CPU performance notes (XLA fusion): gathers read materialised tables and produce separate
buffers (:func:`gather`), one 1-D gather per quantity, and sin/cos carry a materialised
derivative (:func:`_with_derivative`); each of these measured 2-5x on value-and-gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

#: Default geometry: wavevector q (Å⁻¹), rheometer gap h (Å, 200 µm), frame time dt (s).
DEFAULT_Q = 0.0054
DEFAULT_GAP = 2.0e6
DEFAULT_DT = 0.1

#: Physics models and their physical parameters, in canonical order.
STATIC_PARAMS = ("D0", "alpha", "D_offset")
LAMINAR_PARAMS = (*STATIC_PARAMS, "gamma_dot_0", "beta", "gamma_dot_offset", "phi0")
TWO_COMPONENT_PARAMS = (
    "D0_ref", "alpha_ref", "D_offset_ref",
    "D0_sample", "alpha_sample", "D_offset_sample",
    "v0", "beta", "v_offset",
    "f0", "f1", "f2", "f3", "phi0",
)
PHYSICS_PARAMS: dict[str, tuple[str, ...]] = {
    "static": STATIC_PARAMS,
    "laminar_flow": LAMINAR_PARAMS,
    "two_component": TWO_COMPONENT_PARAMS,
}
PHYSICS_MODELS = tuple(PHYSICS_PARAMS)

#: "published": sinc²(x), sinc(x) = sin(x)/x, x = ½ q h cos(φ0 − φ) ∫γ̇ dt (default).
#: "reference": homodyne 2.x, sinc(x/π)⁴ with the same unnormalised sinc and γ̇ floored at 0.
SHEAR_CONVENTIONS = ("published", "reference")

#: Lower clip of the sample-fraction exponent (exp(−700) ≈ 1e−304, a normal float64).
EXP_ARG_MIN = -700.0
#: Upper clip of the exponent in f_s(t) = f0 exp(f1 (t − f2)) + f3: keeps f0 · exp and its
#: gradient finite; it changes f_s only where f0 < exp(−60) ≈ 1e−26 (f_s is clipped to 1).
FRACTION_EXP_ARG_MAX = 60.0
#: |x| below which sinc uses its series 1 − x²/6 + x⁴/120 (error < x⁶/5040).
SINC_SERIES_THRESHOLD = 1e-4
#: Rates are evaluated at t >= RATE_TIME_FLOOR_FRACTION · dt.
RATE_TIME_FLOOR_FRACTION = 0.5


class Geometry(NamedTuple):
    """Non-per-point inputs of a kernel (arrays; traced under jit)."""

    t: Any  # (n_t,) frame times, s
    dt: Any  # frame time, s
    q: Any  # wavevector, Å⁻¹
    gap: Any  # rheometer gap h, Å
    phi: Any  # (n_phi,) detector angles, degrees


class PointIndex(NamedTuple):
    """Per-point integer indices into the angle list and the frame grid."""

    phi_idx: Any
    t1_idx: Any
    t2_idx: Any

    def span(self, cumulative: Any) -> Any:
        """∫ f dt over each point's interval (n,) from the cumulative integral (n_t,)."""
        return interval_integral(cumulative, self.t1_idx, self.t2_idx)

    def at_t1(self, table: Any) -> Any:
        """A per-frame table (n_t,) at the earlier frame of every point, (n,)."""
        return gather(table, jnp.minimum(self.t1_idx, self.t2_idx))

    def at_t2(self, table: Any) -> Any:
        """A per-frame table (n_t,) at the later frame of every point, (n,)."""
        return gather(table, jnp.maximum(self.t1_idx, self.t2_idx))

    def at_angle(self, table: Any) -> Any:
        """A per-angle table (n_phi,) at every point, (n,)."""
        return gather(table, self.phi_idx)


class RowIndex(NamedTuple):
    """Dense frame rows: row r is (angle phi_idx[r], frame t1_idx[r]) against every column
    frame 0..n_cols-1 (frames past n_t - 1 are padding). Quantities broadcast to
    (R, n_cols); entries with column <= t1 carry finite filler (their integral is 0) and
    are masked out of the likelihood by the row layout (:mod:`shardmc.xpcs.row_layout`).
    """

    phi_idx: Any  # (R,) int
    t1_idx: Any  # (R,) int
    n_cols: int  # static: columns of the row arrays (>= n_t)

    def padded(self, table: Any) -> Any:
        """A per-frame table (n_t,) extended to n_cols by its last value."""
        return jnp.pad(table, (0, self.n_cols - table.shape[0]), mode="edge")

    def span(self, cumulative: Any) -> Any:
        """∫_{t1}^{t_j} f dt for every row and column j > t1 (0 elsewhere), (R, n_cols)."""
        c = self.padded(cumulative)
        later = jnp.arange(self.n_cols)[None, :] > self.t1_idx[:, None]
        return jnp.where(later, c[None, :] - c[self.t1_idx][:, None], 0.0)

    def at_t1(self, table: Any) -> Any:
        return table[self.t1_idx][:, None]

    def at_t2(self, table: Any) -> Any:
        return self.padded(table)[None, :]

    def at_angle(self, table: Any) -> Any:
        return table[self.phi_idx][:, None]


def _with_derivative(value_and_derivative: Callable[[Any], tuple[Any, Any]]) -> Callable:
    """An elementwise function whose JVP uses its derivative computed once, materialised.

    Under reverse mode the phase cotangent fans out to several scatters (grid indices,
    angle index); XLA on CPU otherwise recomputes sin/cos inside each of them (3x the
    transcendental work). The optimisation barrier keeps (value, derivative) as buffers.
    """

    @jax.custom_jvp
    def fn(x: Any) -> Any:
        return value_and_derivative(x)[0]

    @fn.defjvp
    def fn_jvp(primals: tuple, tangents: tuple) -> tuple[Any, Any]:
        (x,), (t,) = primals, tangents
        value, derivative = jax.lax.optimization_barrier(value_and_derivative(x))
        return value, derivative * t

    return fn


def _sinc_and_derivative(x: Any) -> tuple[Any, Any]:
    small = jnp.abs(x) < SINC_SERIES_THRESHOLD
    safe = jnp.where(small, 1.0, x)  # where-trick: no 0/0 in either branch or its gradient
    x2 = x * x
    sin = jnp.sin(safe)
    value = jnp.where(small, 1.0 - x2 / 6.0 + x2 * x2 / 120.0, sin / safe)
    derivative = jnp.where(small, x * (x2 / 30.0 - 1.0 / 3.0), (jnp.cos(safe) - sin / safe) / safe)
    return value, derivative


#: Unnormalised sinc sin(x)/x, sinc(0) = 1, with a finite derivative everywhere (series
#: 1 − x²/6 + x⁴/120 for |x| < SINC_SERIES_THRESHOLD).
sinc = _with_derivative(_sinc_and_derivative)
#: cos(x) with a materialised derivative (see :func:`_with_derivative`).
cosine = _with_derivative(lambda x: (jnp.cos(x), -jnp.sin(x)))


def rate_times(t: Any, dt: Any) -> Any:
    """Frame times floored at dt/2 (s), where power-law rates are evaluated."""
    return jnp.maximum(t, RATE_TIME_FLOOR_FRACTION * dt)


def power_law(log_t: Any, amplitude: Any, exponent: Any) -> Any:
    """amplitude · t^exponent from log t (t > 0)."""
    return amplitude * jnp.exp(exponent * log_t)


def cumulative_trapezoid(f: Any, t: Any) -> Any:
    """C[k] = ∫_{t_0}^{t_k} f dt by the trapezoid rule on the grid t (C[0] = 0), shape (n_t,)."""
    steps = 0.5 * (f[1:] + f[:-1]) * jnp.diff(t)
    return jnp.concatenate([jnp.zeros((1,), dtype=steps.dtype), jnp.cumsum(steps)])


def materialize(table: Any) -> Any:
    """``table`` unchanged (bit for bit), computed as its own buffer.

    XLA on CPU inlines a gather's operand into the gather loop, so a computed per-angle
    table (cos φ, a sigmoid-transformed contrast, ...) is recomputed once per *point*;
    a sort on iota keys (an identity XLA cannot fuse through) stops that. It is
    differentiable in forward and reverse mode.
    """
    keys = jax.lax.broadcasted_iota(jnp.int32, jnp.shape(table), 0)
    return jax.lax.sort((keys, table), dimension=0, num_keys=1)[1]


def gather(table: Any, idx: Any) -> Any:
    """table[idx] along axis 0, with the table materialised (see :func:`materialize`) and
    the result kept a separate buffer: XLA on CPU otherwise fuses the gather into the
    elementwise loop that consumes it and emits that loop unvectorised."""
    return jax.lax.optimization_barrier(materialize(table)[idx])


def interval_integral(cumulative: Any, t1_idx: Any, t2_idx: Any) -> Any:
    """∫ f dt from the earlier to the later of (t1, t2): C[max] − C[min], every point.

    ``cumulative`` may be (n_t,) or (n_t, k) (k integrals gathered at once, result (n, k)).
    Ordering the indices (integer ops, no gradient) makes the result symmetric in
    (t1, t2) and, for a non-negative rate, non-negative without an ``abs`` (whose
    gradient made the backward pass ~3x slower on CPU).
    """
    lo, hi = jnp.minimum(t1_idx, t2_idx), jnp.maximum(t1_idx, t2_idx)
    return gather(cumulative, hi) - gather(cumulative, lo)


def decay(q: Any, integral: Any) -> Any:
    """exp(−q² ∫J dt), the squared field correlation of diffusion; ``integral`` >= 0.

    The exponent is <= 0 by construction (J floored at 0, ordered interval), so exp cannot
    overflow; at large lags it underflows to 0 with a 0 gradient (never inf · 0), so no
    clip is needed on this hot path.
    """
    return jnp.exp(-(q * q) * integral)


def shear_factor(x: Any, convention: str = "published") -> Any:
    """Shear decorrelation from the phase x = ½ q h cos(φ0 − φ) ∫γ̇ dt."""
    if convention == "published":
        return sinc(x) ** 2
    if convention == "reference":
        return sinc(x / jnp.pi) ** 4
    raise ValueError(f"shear_convention: expected one of {SHEAR_CONVENTIONS}, found {convention!r}")


def _diffusion_rate(log_t: Any, d0: Any, alpha: Any, d_offset: Any) -> Any:
    return jnp.maximum(power_law(log_t, d0, alpha) + d_offset, 0.0)


def homodyne_term(
    params: Mapping[str, Any],
    geometry: Geometry,
    index: PointIndex | RowIndex,
    *,
    shear: bool,
    shear_convention: str = "published",
) -> Any:
    """The g1² factor of the homodyne model at every point, shape (n,).

    params: D0, alpha, D_offset (and, with ``shear``, gamma_dot_0, beta, gamma_dot_offset,
    phi0 in degrees).
    """
    c_diff = diffusion_integral(params, geometry)
    if not shear:
        return decay(geometry.q, index.span(c_diff))
    log_t = jnp.log(rate_times(geometry.t, geometry.dt))
    gamma_dot = power_law(log_t, params["gamma_dot_0"], params["beta"]) + params["gamma_dot_offset"]
    if shear_convention == "reference":
        gamma_dot = jnp.maximum(gamma_dot, 0.0)
    c_shear = cumulative_trapezoid(gamma_dot, geometry.t)
    int_diff = index.span(c_diff)
    int_shear = index.span(c_shear)
    cos_phi = index.at_angle(jnp.cos(jnp.deg2rad(geometry.phi - params["phi0"])))
    phase = (0.5 * geometry.q * geometry.gap) * cos_phi * int_shear
    return decay(geometry.q, int_diff) * shear_factor(phase, shear_convention)


def diffusion_integral(params: Mapping[str, Any], geometry: Geometry) -> Any:
    """C[k] = ∫_{t_0}^{t_k} J dt (Å²), J = max(D0 t^α + D_offset, 0), shape (n_t,)."""
    log_t = jnp.log(rate_times(geometry.t, geometry.dt))
    rate = _diffusion_rate(log_t, params["D0"], params["alpha"], params["D_offset"])
    return cumulative_trapezoid(rate, geometry.t)


def sample_fraction(t: Any, f0: Any, f1: Any, f2: Any, f3: Any) -> Any:
    """Sample fraction f_s(t) = clip(f0 · exp(f1 (t − f2)) + f3, 0, 1) on the grid."""
    exponent = jnp.clip(f1 * (t - f2), EXP_ARG_MIN, FRACTION_EXP_ARG_MAX)
    return jnp.clip(f0 * jnp.exp(exponent) + f3, 0.0, 1.0)


def heterodyne_term(params: Mapping[str, Any], geometry: Geometry,
                    index: PointIndex | RowIndex) -> Any:
    """The normalised two-component (reference + sample) correlation at every point, (n,)."""
    p = params
    log_t = jnp.log(rate_times(geometry.t, geometry.dt))
    j_ref = _diffusion_rate(log_t, p["D0_ref"], p["alpha_ref"], p["D_offset_ref"])
    j_smp = _diffusion_rate(log_t, p["D0_sample"], p["alpha_sample"], p["D_offset_sample"])
    velocity = power_law(log_t, p["v0"], p["beta"]) + p["v_offset"]
    fs = sample_fraction(geometry.t, p["f0"], p["f1"], p["f2"], p["f3"])
    # ordered interval (the expression is symmetric in t1 <-> t2): J integrals are >= 0.
    # One 1-D gather per quantity: row gathers of a stacked (n_t, k) table leave strided
    # columns that XLA on CPU does not vectorise.
    int_ref = index.span(cumulative_trapezoid(j_ref, geometry.t))
    int_smp = index.span(cumulative_trapezoid(j_smp, geometry.t))
    int_v = index.span(cumulative_trapezoid(velocity, geometry.t))
    h_ref2 = decay(geometry.q, int_ref)  # h_r² = exp(−q² ∫J_r)
    h_smp2 = decay(geometry.q, int_smp)
    h_cross = decay(geometry.q, 0.5 * (int_ref + int_smp))  # h_r · h_s
    fs1, fs2 = index.at_t1(fs), index.at_t2(fs)
    fr1, fr2 = 1.0 - fs1, 1.0 - fs2
    q_cos = geometry.q * index.at_angle(jnp.cos(jnp.deg2rad(geometry.phi + p["phi0"])))
    cross = 2.0 * fr1 * fs1 * fr2 * fs2 * h_cross * cosine(q_cos * int_v)
    numerator = (fr1 * fr2) ** 2 * h_ref2 + (fs1 * fs2) ** 2 * h_smp2 + cross
    denominator = (fs1**2 + fr1**2) * (fs2**2 + fr2**2)  # >= 1/4 since f_r + f_s = 1
    return numerator / denominator


def correlation_term(
    physics: str,
    params: Mapping[str, Any],
    geometry: Geometry,
    index: PointIndex | RowIndex,
    *,
    shear_convention: str = "published",
) -> Any:
    """The normalised correlation (c2 − offset)/contrast of ``physics`` at every point."""
    if physics == "static":
        return homodyne_term(params, geometry, index, shear=False)
    if physics == "laminar_flow":
        return homodyne_term(params, geometry, index, shear=True, shear_convention=shear_convention)
    if physics == "two_component":
        return heterodyne_term(params, geometry, index)
    raise ValueError(f"physics: expected one of {PHYSICS_MODELS}, found {physics!r}")


def c2_mean(
    physics: str,
    params: Mapping[str, Any],
    contrast: Any,
    offset: Any,
    geometry: Geometry,
    index: PointIndex | RowIndex,
    *,
    shear_convention: str = "published",
) -> Any:
    """Model c2 at every point (n,) or row entry (R, n_cols): offset_φ + contrast_φ · term;
    contrast/offset are (n_phi,)."""
    term = correlation_term(physics, params, geometry, index, shear_convention=shear_convention)
    return index.at_angle(offset) + index.at_angle(contrast) * term


def c2_matrix(
    physics: str,
    params: Mapping[str, Any],
    contrast: Any,
    offset: Any,
    geometry: Geometry,
    *,
    shear_convention: str = "published",
) -> Any:
    """Full model matrices (n_phi, n_t, n_t) (both triangles and the diagonal)."""
    n_phi, n_t = jnp.shape(geometry.phi)[0], jnp.shape(geometry.t)[0]
    grid_phi, grid_t1, grid_t2 = jnp.meshgrid(
        jnp.arange(n_phi), jnp.arange(n_t), jnp.arange(n_t), indexing="ij"
    )
    index = PointIndex(grid_phi.ravel(), grid_t1.ravel(), grid_t2.ravel())
    values = c2_mean(physics, params, jnp.asarray(contrast), jnp.asarray(offset), geometry, index,
                     shear_convention=shear_convention)
    return values.reshape(n_phi, n_t, n_t)
