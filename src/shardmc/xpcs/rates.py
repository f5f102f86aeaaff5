"""Consensus in rate space: combine XPCS shard draws where the sub-posteriors are near Gaussian.

The homodyne power laws J(t) = D0 t^α + D_offset and γ̇(t) = γ̇0 t^β + γ̇_offset make each
shard's posterior a curved ridge in the sampled (logit) coordinates, and the ridge bends
differently in each shard, so the Gaussian precision-weighted average of the shard draws
(:func:`shardmc.combine.consensus_mc`) comes out about 2x too narrow (docs/xpcs.md). The
data pin the *rates* at the times they cover; in the coordinates

    φ = (J(t_a), J(t_b), J(t_c)),  t_a = T/RATE_TIME_SPAN, t_b = t_a r, t_c = t_a r² = T

(likewise γ̇), with T the last frame time and r = √RATE_TIME_SPAN, the ridge is nearly
straight. :func:`rate_space_consensus` maps every shard draw to φ (other coordinates stay
unconstrained), combines them by consensus there, maps back with the closed-form inverse

    r^α = (J_c − J_b)/(J_b − J_a),  D0 = (J_b − J_a)/(t_a^α (r^α − 1)),  D_offset = J_a − D0 t_a^α

and importance-weights each combined draw by |∂y/∂φ|^−(K−1) (y: the unconstrained
coordinates NUTS and the tempering work in), because the product of K shard densities in
φ carries the Jacobian K times and the posterior once. Draws whose inverse leaves a
prior's support (no real α, D0 <= 0, a bound crossed) get weight 0. The weighted draws
are resampled (systematic, seeded) to equal weight. Nothing is refitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shardmc.combine import combine
from shardmc.xpcs.models import XPCSModel, site_bounds
from shardmc.xpcs.parameters import LOG_PRIOR_KINDS

#: t_a = T / RATE_TIME_SPAN: the reference times span the data's time window geometrically.
RATE_TIME_SPAN = 20.0
#: (amplitude, exponent, offset) of each power-law rate, J and γ̇.
RATE_BLOCKS = (("D0", "alpha", "D_offset"), ("gamma_dot_0", "beta", "gamma_dot_offset"))


@dataclass(frozen=True, eq=False)
class RateSpaceResult:
    """Result of :func:`rate_space_consensus`.

    samples: physical name -> equal-weight draws (S,) or (S, n_angles);
    reference_times: (3,) s; importance_ess: Kish effective size of the weights (draws);
    valid_fraction: share of combined draws inside every prior's support; num_shards: K.
    """

    samples: dict[str, np.ndarray]
    reference_times: np.ndarray
    importance_ess: float
    valid_fraction: float
    num_shards: int


def reference_times(t: Any) -> np.ndarray:
    """Three geometric times (s) from t[-1] / RATE_TIME_SPAN to t[-1]."""
    t_max = float(np.asarray(t)[-1])
    if not t_max > 0:
        raise ValueError(f"t: expected a last frame time > 0, found {t_max}")
    return t_max / RATE_TIME_SPAN * np.sqrt(RATE_TIME_SPAN) ** np.arange(3)


def _site_interval(model: XPCSModel, name: str) -> tuple[float, float, bool]:
    spec = model.prior[name]
    lo, hi = site_bounds(spec)
    return float(lo), float(hi), spec.kind in LOG_PRIOR_KINDS


def _log_sigmoid(y: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -y)


def to_physical(model: XPCSModel, name: str, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Physical value of ``name`` from its unconstrained coordinate y, and log|dθ/dy|.

    Every site lives on an interval (its prior's bounds, on the log for log priors) that
    NumPyro maps to R by ``lower + width · sigmoid(y)``.
    """
    lo, hi, log = _site_interval(model, name)
    width = hi - lo
    site = lo + width / (1.0 + np.exp(-y))
    log_jac = np.log(width) + _log_sigmoid(y) + _log_sigmoid(-y)
    return (np.exp(site), log_jac + site) if log else (site, log_jac)


def to_unconstrained(model: XPCSModel, name: str, theta: np.ndarray) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """Inverse of :func:`to_physical`: (y, log|dθ/dy|); NaN outside the support."""
    lo, hi, log = _site_interval(model, name)
    with np.errstate(invalid="ignore", divide="ignore"):
        site = np.log(theta) if log else np.asarray(theta, dtype=float)
        frac = (site - lo) / (hi - lo)
        frac = np.where((frac > 0) & (frac < 1), frac, np.nan)
        y = np.log(frac) - np.log1p(-frac)
        log_jac = np.log(hi - lo) + np.log(frac) + np.log1p(-frac)
    return y, (log_jac + site if log else log_jac)


def rates(amplitude: Any, exponent: Any, offset: Any, times: np.ndarray) -> np.ndarray:
    """amplitude · t^exponent + offset at ``times``, shape (n, 3)."""
    a, e, o = (np.asarray(v, dtype=float)[:, None] for v in (amplitude, exponent, offset))
    return a * times**e + o


def log_abs_det_rates(amplitude: Any, exponent: Any, times: np.ndarray) -> np.ndarray:
    """log |det ∂(rates)/∂(amplitude, exponent, offset)|, shape (n,)."""
    e = np.asarray(exponent, dtype=float)[:, None]
    power = times**e
    m = np.stack([power, power * np.log(times), np.ones_like(power)], axis=-1)
    with np.errstate(divide="ignore"):
        return np.log(np.abs(np.asarray(amplitude, dtype=float))) + np.log(
            np.abs(np.linalg.det(m)))


def invert_rates(values: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, ...]:
    """(amplitude, exponent, offset) from rates at geometric ``times``; NaN where none exists."""
    ratio_step = times[1] / times[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (values[:, 2] - values[:, 1]) / (values[:, 1] - values[:, 0])
        exponent = np.log(np.where(ratio > 0, ratio, np.nan)) / np.log(ratio_step)
        amplitude = (values[:, 1] - values[:, 0]) / (times[0] ** exponent
                                                     * (ratio_step**exponent - 1.0))
        offset = values[:, 0] - amplitude * times[0] ** exponent
    return amplitude, exponent, offset


def _blocks(model: XPCSModel) -> list[tuple[str, str, str]]:
    names = set(model.parameter_names)
    return [b for b in RATE_BLOCKS if set(b) <= names]


def _column(coords: list[str], model: XPCSModel, name: str) -> int:
    return coords.index(model.site_name(name))


def _forward(model: XPCSModel, draws: np.ndarray, coords: list[str], times: np.ndarray,
             blocks: list[tuple[str, str, str]]) -> np.ndarray:
    """Shard draws (n, d) unconstrained -> (n, d): each block's 3 columns replaced by rates."""
    out = draws.copy()
    for block in blocks:
        cols = [_column(coords, model, n) for n in block]
        theta = [to_physical(model, n, draws[:, c])[0] for n, c in zip(block, cols, strict=True)]
        out[:, cols] = rates(*theta, times)
    return out


def _backward(model: XPCSModel, combined: np.ndarray, coords: list[str], times: np.ndarray,
              blocks: list[tuple[str, str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Combined draws in rate space -> (unconstrained draws, log|dy/dφ|) (inf: outside)."""
    out = combined.copy()
    log_dy_dphi = np.zeros(len(combined))
    for block in blocks:
        cols = [_column(coords, model, n) for n in block]
        amplitude, exponent, offset = invert_rates(combined[:, cols], times)
        log_dy_dphi = log_dy_dphi - log_abs_det_rates(amplitude, exponent, times)
        for name, col, theta in zip(block, cols, (amplitude, exponent, offset),
                                   strict=True):
            y, log_jac = to_unconstrained(model, name, theta)
            out[:, col] = y
            log_dy_dphi = log_dy_dphi - log_jac
    return out, np.where(np.isfinite(log_dy_dphi) & np.isfinite(out).all(axis=1),
                         log_dy_dphi, np.inf)


def systematic_resample(weights: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of ``size`` draws by systematic resampling of normalised ``weights``."""
    positions = (np.random.default_rng(seed).random() + np.arange(size)) / size
    cumulative = np.cumsum(weights)
    cumulative /= cumulative[-1]
    return np.minimum(np.searchsorted(cumulative, positions), len(weights) - 1)


def _physical_samples(model: XPCSModel, draws: np.ndarray, coords: list[str],
                      fixed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in model._global_names():
        shape = model.site_shape(name)
        site = model.site_name(name)
        cols = ([coords.index(site)] if not shape
                else [coords.index(f"{site}[{i}]") for i in range(shape[0])])
        values = to_physical(model, name, draws[:, cols])[0]
        out[name] = values[:, 0] if not shape else values
    for name, value in fixed.items():
        out.setdefault(name, np.broadcast_to(value[0], (len(draws), *value.shape[1:])).copy())
    return out


def combine_in_rate_space(shard: np.ndarray, coords: list[str], model: XPCSModel, t: Any, *,
                          seed: int = 0, shrinkage: str | bool = "auto"
                          ) -> tuple[np.ndarray, dict[str, Any]]:
    """Shard draws (K, S, d) unconstrained -> (equal-weight combined draws (S, d), info).

    info: reference_times (s), importance_ess (Kish size of the weights, draws),
    valid_fraction (share of combined draws inside every prior's support)."""
    if model.rate_blocks:
        raise ValueError("rate_space_consensus: the model samples its power-law blocks in "
                         f"rate coordinates already ({sorted(model.rate_blocks)}); combine "
                         "with method='consensus', or build it with parameterization='physical'")
    shard = np.asarray(shard, dtype=float)
    k = shard.shape[0]
    times = reference_times(t)
    blocks = _blocks(model)
    phi = np.stack([_forward(model, s, coords, times, blocks) for s in shard])
    center, scale = phi.mean(axis=(0, 1)), phi.std(axis=(0, 1))
    scale = np.where(scale > 0, scale, 1.0)  # consensus is affine-equivariant; shrinkage is not
    combined = combine((phi - center) / scale, "consensus", seed=seed,
                       shrinkage=shrinkage).draws * scale + center
    draws, log_dy_dphi = _backward(model, combined, coords, times, blocks)
    valid = np.isfinite(log_dy_dphi)
    if not valid.any():
        raise ValueError("rate_space_consensus: no combined draw maps back inside the priors")
    log_w = np.where(valid, -(k - 1) * log_dy_dphi, -np.inf)
    w = np.exp(log_w - log_w[valid].max())
    w /= w.sum()
    rows = systematic_resample(w, len(draws), seed)
    info = {"method": "rate_space_consensus", "reference_times": times.tolist(),
            "importance_ess": float(1.0 / np.sum(w**2)), "valid_fraction": float(valid.mean()),
            "num_draws": len(draws)}
    return draws[rows], info


def rate_space_combiner(model: XPCSModel, t: Any, *, shrinkage: str | bool = "auto"):
    """A combiner for ``shardmc.fit(method=...)``: consensus in rate space for ``model``
    on frame times ``t`` (s). The posterior then holds the rate-space combination."""
    def rate_space_consensus(draws: np.ndarray, *, coords: list[str], seed: int = 0,
                             **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
        if options:
            raise ValueError(f"rate_space_consensus takes no combine options, found "
                             f"{sorted(options)}")
        return combine_in_rate_space(draws, coords, model, t, seed=seed, shrinkage=shrinkage)
    return rate_space_consensus


def rate_space_consensus(posterior: Any, model: XPCSModel, t: Any, *, seed: int = 0,
                         shrinkage: str | bool = "auto") -> RateSpaceResult:
    """Recombine ``posterior``'s shard draws by consensus in rate space (module docstring).

    posterior: a :class:`shardmc.Posterior` from ``shardmc.fit`` of ``model`` (its
    ``shard_draws`` and ``coords``); t: the data's frame times (s), e.g. ``data.t``.
    Physics without a power-law block (two_component) are combined as plain consensus.
    """
    coords = list(posterior.coords)
    shard = np.asarray(posterior.shard_draws, dtype=float)
    k = shard.shape[0]
    draws, info = combine_in_rate_space(shard.reshape(k, -1, shard.shape[-1]), coords, model,
                                        t, seed=seed, shrinkage=shrinkage)
    fixed = {n: np.asarray(v) for n, v in posterior.samples.items()
             if n in model.deterministic_sites and n not in model._global_names()}
    samples = _physical_samples(model, draws, coords, fixed)
    return RateSpaceResult(samples, np.asarray(info["reference_times"]),
                           info["importance_ess"], info["valid_fraction"], k)
