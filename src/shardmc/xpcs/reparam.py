"""Power-law rate blocks sampled in rate coordinates, with their exact box prior.

A power-law rate r(t) = A t^p + B (diffusion J with (D0, alpha, D_offset), shear γ̇ with
(gamma_dot_0, beta, gamma_dot_offset), velocity v with (v0, beta, v_offset)) makes the
sub-posterior of (log A, p, B) a long *curved* ridge: the data pin the rate's level and
slope over the times they cover, not the split between its terms, and NUTS mixes badly
along such a ridge (docs/xpcs.md). In the coordinates

    x₁ = log A                     (amplitude at 1 s: the parameter table's own bound)
    x₂ = A (t_r^p − 1) / log t_r   (log-time secant slope of r between 1 s and t_r)
    x₃ = A t_r^p + B = r(t_r)      (level at t_r)

with t_r the middle of the data's time window (:func:`reference_time`), level and slope
stay put along the ridge and only A moves: the ridge is nearly straight. x₁ is the
amplitude at 1 s, not at t_r, so that the amplitude's bound is x₁'s own interval: with
log r(t_r) first it became a slanted face which the tempered prior reaches when the data
do not fix A (α = 0), with a cliff in the conditional slope interval there.

Each block is one sample site of event shape (3,) on the whole real line, distributed as
the box prior of (log A, p, B) pushed through the bijection u → x → (log A, p, B)
(:class:`RateBlockPrior`). The map is triangular: x₁ ranges over [log A_lo, log A_hi];
given x₁ the exponent bounds confine x₂, and given (x₁, p) the offset bounds confine x₃.
Each coordinate is taken from its interval by :func:`soft_interval`, which is *affine*
in the bulk (x = center + scale·u, whatever the interval) and bends smoothly into the
ends; a logit of the position within a moving interval would give back a function of p
or B, hence the curve. The prior stays exactly the table's prior, so prior tempering and
the combination in these unconstrained coordinates stay exact (DESIGN invariant 1).

Jacobians: |det ∂(x₁, x₂, x₃)/∂(log A, p, B)| = A t_r^p, and dx/du by
:func:`soft_interval`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints

#: Sharpness k of :func:`soft_interval`, per unit of the interval's width: the map is
#: affine to within 1 % of its slope more than 0.1 width from either end.
SOFT_BOUND_SHARPNESS = 50.0
#: t_a = T / RATE_TIME_SPAN (T the last frame time): the data's time window in logs.
RATE_TIME_SPAN = 20.0
#: Intervals narrower than this (a degenerate conditional range) are widened to it.
MIN_WIDTH = 1e-300


def reference_time(t: Any) -> Any:
    """The block's reference time t_r (s): the geometric middle of [T/RATE_TIME_SPAN, T]."""
    t_max = jnp.asarray(t)[-1]
    return t_max / jnp.sqrt(RATE_TIME_SPAN)


def _softplus(v: Any) -> Any:
    return jax.nn.softplus(SOFT_BOUND_SHARPNESS * v) / SOFT_BOUND_SHARPNESS


def _softplus_inv(v: Any) -> Any:
    kv = SOFT_BOUND_SHARPNESS * v
    return (kv + jnp.log(-jnp.expm1(-kv))) / SOFT_BOUND_SHARPNESS


#: 1 − softplus(1): the lower end of the unnormalised squashing, rescaled away below.
_G0 = 1.0 - float(np.logaddexp(0.0, SOFT_BOUND_SHARPNESS)) / SOFT_BOUND_SHARPNESS


def soft_interval(u: Any, lo: Any, hi: Any, center: Any, scale: Any) -> tuple[Any, Any]:
    """x in (lo, hi) from u in R, and log dx/du.

    x = center + scale·u wherever that lies well inside (lo, hi) (to e^(−k·distance)
    relative), then bends smoothly and monotonically into the ends.
    """
    width = jnp.maximum(hi - lo, MIN_WIDTH)
    y = (center + scale * u - lo) / width
    inner = _softplus(y)
    outer = _softplus(1.0 - inner)
    g = (1.0 - outer - _G0) / (1.0 - _G0)
    k = SOFT_BOUND_SHARPNESS
    log_dx = (jnp.log(scale) + jax.nn.log_sigmoid(k * (1.0 - inner))
              + jax.nn.log_sigmoid(k * y) - jnp.log1p(-_G0))
    return lo + width * g, log_dx


def soft_interval_inverse(x: Any, lo: Any, hi: Any, center: Any, scale: Any) -> Any:
    """u from x in (lo, hi): the inverse of :func:`soft_interval`."""
    width = jnp.maximum(hi - lo, MIN_WIDTH)
    g = (x - lo) / width
    outer = (1.0 - _G0) * (1.0 - g)
    inner = 1.0 - _softplus_inv(outer)
    y = _softplus_inv(inner)
    return (lo + width * y - center) / scale


class BlockBox(NamedTuple):
    """Bounds of a block on its site scale: log A in [a_lo, a_hi], p, B likewise."""

    a_lo: float
    a_hi: float
    p_lo: float
    p_hi: float
    b_lo: float
    b_hi: float


def _secant(p: Any, tau: Any) -> Any:
    """(e^(pτ) − 1)/τ: the log-time secant slope factor (p at τ = 0)."""
    small = jnp.abs(tau) < 1e-12
    tau_safe = jnp.where(small, 1.0, tau)
    return jnp.where(small, p, jnp.expm1(p * tau_safe) / tau_safe)


def _secant_inverse(y: Any, tau: Any) -> Any:
    """p from y = (e^(pτ) − 1)/τ (y τ > −1 inside the exponent's interval)."""
    small = jnp.abs(tau) < 1e-12
    tau_safe = jnp.where(small, 1.0, tau)
    return jnp.where(small, y, jnp.log1p(y * tau_safe) / tau_safe)


def block_to_site(u: Any, box: BlockBox, tau: Any, center: Any, scale: Any
                  ) -> tuple[tuple[Any, Any, Any], Any]:
    """(log A, p, B) from u (..., 3), and log |det ∂(log A, p, B)/∂u|."""
    log_a, j1 = soft_interval(u[..., 0], box.a_lo, box.a_hi, center[0], scale[0])
    amplitude = jnp.exp(log_a)
    slope, j2 = soft_interval(u[..., 1], amplitude * _secant(box.p_lo, tau),
                              amplitude * _secant(box.p_hi, tau), center[1], scale[1])
    p = _secant_inverse(slope / amplitude, tau)
    log_rate = log_a + p * tau
    rate = jnp.exp(log_rate)
    level, j3 = soft_interval(u[..., 2], rate + box.b_lo, rate + box.b_hi, center[2], scale[2])
    # the clips only undo rounding at the ends of the intervals
    site = (jnp.clip(log_a, box.a_lo, box.a_hi), jnp.clip(p, box.p_lo, box.p_hi),
            jnp.clip(level - rate, box.b_lo, box.b_hi))
    return site, j1 + j2 + j3 - log_rate


def site_to_block(log_a: Any, p: Any, b: Any, box: BlockBox, tau: Any, center: Any,
                  scale: Any) -> Any:
    """u (..., 3) from (log A, p, B): the inverse of :func:`block_to_site`."""
    u1 = soft_interval_inverse(log_a, box.a_lo, box.a_hi, center[0], scale[0])
    amplitude = jnp.exp(log_a)
    u2 = soft_interval_inverse(amplitude * _secant(p, tau), amplitude * _secant(box.p_lo, tau),
                               amplitude * _secant(box.p_hi, tau), center[1], scale[1])
    rate = jnp.exp(log_a + p * tau)
    u3 = soft_interval_inverse(rate + b, rate + box.b_lo, rate + box.b_hi, center[2], scale[2])
    return jnp.stack([u1, u2, u3], axis=-1)


class RateBlockPrior(dist.Distribution):
    """The box prior of one power-law block, in rate coordinates u (event shape (3,)).

    priors: the three site distributions (log A on the log scale, p, B), independent;
    box: their bounds; log_t_ref: log of the reference time (s); center, scale (3,):
    the affine part of each coordinate (x = center + scale·u in the bulk).
    """

    support = constraints.real_vector

    def __init__(self, priors: tuple[Any, Any, Any], box: BlockBox, log_t_ref: Any,
                 center: Any, scale: Any, *, validate_args: bool | None = None) -> None:
        self.priors, self.box = priors, box
        self.log_t_ref = log_t_ref
        self.center, self.scale = jnp.asarray(center), jnp.asarray(scale)
        super().__init__(batch_shape=(), event_shape=(3,), validate_args=validate_args)

    def to_site(self, u: Any) -> tuple[tuple[Any, Any, Any], Any]:
        """(log A, p, B) of u and log |det ∂(log A, p, B)/∂u|."""
        return block_to_site(u, self.box, self.log_t_ref, self.center, self.scale)

    def from_site(self, log_a: Any, p: Any, b: Any) -> Any:
        return site_to_block(log_a, p, b, self.box, self.log_t_ref, self.center, self.scale)

    def log_prob(self, value: Any) -> Any:
        (log_a, p, b), log_det = self.to_site(value)
        lp = sum(d.log_prob(v) for d, v in zip(self.priors, (log_a, p, b), strict=True))
        return lp + log_det

    def sample(self, key: Any, sample_shape: tuple[int, ...] = ()) -> Any:
        keys = jax.random.split(key, 3)
        site = [d.sample(k, sample_shape) for d, k in zip(self.priors, keys, strict=True)]
        return self.from_site(*site)
