"""Least-squares warm start: initial values for NUTS (never a prior).

A bounded nonlinear least-squares fit (scipy ``least_squares``, trust-region reflective)
of the model mean to the pooled points, with the Jacobian from ``jax.jacfwd`` of the
residuals, in float64. Parameters with a log prior are fitted in log space. The result
initialises NUTS (``init_values``, in the model's sample-site space, for
``init_to_value``); it must not be turned into a prior: the data would be used twice
(the reference's mistake 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import potential_energy, unconstrain_fn
from scipy.optimize import least_squares

from shardmc.errors import ShardMCInputError
from shardmc.xpcs.data import XPCSData, estimate_scaling
from shardmc.xpcs.model_arrays import mean_c2, model_data, model_kwargs, to_site_values
from shardmc.xpcs.models import XPCSModel, site_bounds
from shardmc.xpcs.parameters import LOG_PRIOR_KINDS, NOISE_PARAM, PARAMETER_TABLE, SCALING_PARAMS

#: Points used by the fit at most (a seeded random subset above this).
DEFAULT_MAX_POINTS = 200_000
#: Initial values and init_values are kept this fraction of the bound width inside the bounds.
INTERIOR_MARGIN = 1e-6
#: Normalised correlation band used by the decay-rate heuristic for the initial D0.
DECAY_BAND = (0.2, 0.9)
#: Names of the diffusion amplitudes initialised from the decay-rate heuristic.
DIFFUSION_AMPLITUDES = ("D0", "D0_ref", "D0_sample")
#: two_component extra starts: D0_ref / D0_sample around the decay-rate guess. The table's
#: start (equal amplitudes, v0 = 1, f0 = 0.5) sits between the two labelings of the
#: components, and least squares can stop there (docs/xpcs.md, "two_component").
COMPONENT_SPLITS = (4.0, 0.25)


class _Entry(NamedTuple):
    name: str
    shape: tuple[int, ...]
    log: bool
    lower: float  # in fit space
    upper: float


@dataclass(frozen=True, eq=False)
class WarmStart:
    """Result of :func:`warm_start`.

    init_values: sample-site name -> value (constrained site space) for ``init_to_value``;
    physical: physical values (per-angle arrays for contrast, offset, sigma);
    std_errors: asymptotic standard errors of the physical values (NaN if singular);
    cost: ½ Σ r²; num_points: points used by the fit;
    unconstrained_sites: (site, shape) in ``ravel_pytree`` order (sorted names), the
    layout of ``unconstrained_covariance``: the Laplace covariance (inverse Hessian of the
    full-data NumPyro potential at ``init_values``, unconstrained space) — a dense inverse
    mass matrix for NUTS (times K for a shard of K); None where the Hessian is not
    positive definite. start_costs: the cost reached from every start of
    :func:`start_points` (``cost`` is their minimum).
    """

    init_values: dict[str, np.ndarray]
    physical: dict[str, np.ndarray]
    std_errors: dict[str, np.ndarray]
    cost: float
    success: bool
    message: str
    nfev: int
    num_points: int
    unconstrained_sites: tuple[tuple[str, tuple[int, ...]], ...] = ()
    unconstrained_covariance: np.ndarray | None = None
    start_costs: tuple[float, ...] = ()


def _fit_names(model: XPCSModel) -> tuple[str, ...]:
    scaling = SCALING_PARAMS if model.scaling_mode != "constant" else ()
    return (*model.parameter_names, *scaling)


def _layout(model: XPCSModel) -> tuple[_Entry, ...]:
    out = []
    for name in _fit_names(model):
        spec = model.prior[name]
        lo, hi = site_bounds(spec)
        out.append(_Entry(name, model.site_shape(name), spec.kind in LOG_PRIOR_KINDS,
                          float(lo), float(hi)))
    return tuple(out)


def _unpack(layout: tuple[_Entry, ...], x: Any) -> dict[str, Any]:
    values, i = {}, 0
    for e in layout:
        size = int(np.prod(e.shape, dtype=int))
        seg = x[i:i + size].reshape(e.shape)
        values[e.name] = jnp.exp(seg) if e.log else seg
        i += size
    return values


def _interior(x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    margin = INTERIOR_MARGIN * (upper - lower)
    return np.clip(x, lower + margin, upper - margin)


def _bounds(layout: tuple[_Entry, ...]) -> tuple[np.ndarray, np.ndarray]:
    lo = np.concatenate([np.full(int(np.prod(e.shape, dtype=int)), e.lower) for e in layout])
    hi = np.concatenate([np.full(int(np.prod(e.shape, dtype=int)), e.upper) for e in layout])
    return lo, hi


def decay_rate_guess(data: XPCSData) -> float:
    """Effective diffusion rate (Å²/s) from −log of the normalised correlation vs lag."""
    scaling = estimate_scaling(data)
    t1, t2 = np.triu_indices(data.n_t, k=1)
    contrast = np.maximum(scaling.contrast, 1e-12)[:, None]
    g = (data.c2[:, t1, t2] - scaling.offset[:, None]) / contrast
    lag = (data.t[t2] - data.t[t1])[None, :] * np.ones_like(g)
    band = (g > DECAY_BAND[0]) & (g < DECAY_BAND[1])
    if not band.any():
        return float(PARAMETER_TABLE["D0"].default)
    rate = -np.log(g[band]) / (data.q**2 * lag[band])
    return float(np.median(rate))


def initial_physical(model: XPCSModel, data: XPCSData,
                     initial: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Starting values: table defaults, the decay-rate guess for D0, quantile scalings,
    then ``initial`` (physical values by name) on top."""
    values: dict[str, Any] = {n: PARAMETER_TABLE[n].default for n in model.parameter_names}
    rate = decay_rate_guess(data)
    for name in DIFFUSION_AMPLITUDES:
        if name in values:
            values[name] = rate
    if model.scaling_mode != "constant":
        est = estimate_scaling(data)
        avg = model.scaling_mode == "averaged"
        values["contrast"] = est.contrast.mean() if avg else est.contrast
        values["offset"] = est.offset.mean() if avg else est.offset
    unknown = sorted(set(initial or {}) - set(values))
    if unknown:
        raise ShardMCInputError(f"initial: unknown parameter(s) {unknown}; expected some of "
                                f"{sorted(values)}")
    values.update(dict(initial or {}))
    return {k: np.broadcast_to(np.asarray(v, dtype=np.float64), model.site_shape(k)).copy()
            for k, v in values.items()}


def start_points(model: XPCSModel, data: XPCSData,
                 initial: Mapping[str, Any] | None = None) -> list[dict[str, np.ndarray]]:
    """Least-squares starts: :func:`initial_physical`, then for ``two_component`` one per
    split D0_ref / D0_sample of :data:`COMPONENT_SPLITS` (unless ``initial`` names either)."""
    base = initial_physical(model, data, initial)
    if model.physics != "two_component" or {"D0_ref", "D0_sample"} & set(initial or {}):
        return [base]
    rate = base["D0_ref"]
    return [base] + [{**base, "D0_ref": rate * np.sqrt(split),
                      "D0_sample": rate / np.sqrt(split)} for split in COMPONENT_SPLITS]


def _subset(arrays: dict[str, np.ndarray], max_points: int, seed: int) -> dict[str, np.ndarray]:
    n = arrays["c2"].shape[0]
    if n <= max_points:
        return arrays
    rows = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
    return {k: v[rows] for k, v in arrays.items()}


def _per_angle_rms(residual: np.ndarray, phi_idx: np.ndarray, n_angles: int) -> np.ndarray:
    sums = np.bincount(phi_idx, weights=residual**2, minlength=n_angles)
    counts = np.maximum(np.bincount(phi_idx, minlength=n_angles), 1)
    return np.sqrt(sums / counts)


def _least_squares(model: XPCSModel, layout: tuple[_Entry, ...], arrays: dict[str, np.ndarray],
                   kwargs: dict[str, np.ndarray], starts: list[np.ndarray], max_nfev: int):
    """scipy least_squares on (c2 − mean)/scale with a jax.jacfwd Jacobian from every start
    (one compile); (the lowest-cost fit, J at its x, the cost of every start)."""

    def residual(x, arr, kw):
        return (arr["c2"] - mean_c2(model, _unpack(layout, x), arr, kw)) / arr["scale"]

    res_fn = jax.jit(residual)
    jac_fn = jax.jit(jax.jacfwd(residual))
    lo, hi = _bounds(layout)
    fits = [least_squares(
        lambda x: np.asarray(res_fn(x, arrays, kwargs)),
        _interior(x0, lo, hi),
        jac=lambda x: np.asarray(jac_fn(x, arrays, kwargs)),
        bounds=(lo, hi),
        method="trf",
        x_scale="jac",
        max_nfev=max_nfev,
    ) for x0 in starts]
    best = min(fits, key=lambda f: f.cost if np.isfinite(f.cost) else np.inf)
    return best, np.asarray(jac_fn(best.x, arrays, kwargs)), [float(f.cost) for f in fits]


def warm_start(
    model: XPCSModel,
    data: XPCSData,
    *,
    initial: Mapping[str, Any] | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
    max_nfev: int = 200,
    seed: int = 0,
    laplace: bool = True,
) -> WarmStart:
    """Least-squares fit of ``model`` to ``data``; its values initialise NUTS.

    initial: physical starting values by name (else defaults and data heuristics);
    two_component fits from several starts (:func:`start_points`) and keeps the lowest cost.
    max_points: fit a seeded random subset of at most this many pooled points.
    laplace: also compute the unconstrained Laplace covariance (one Hessian compile).
    """
    model = model.with_points()  # a least-squares fit of a random subset of points
    layout = _layout(model)
    with jax.enable_x64(True):
        arrays = model_data(model, data)
        arrays["scale"] = arrays.pop("sigma", np.ones_like(arrays["c2"]))
        arrays = _subset(arrays, int(max_points), seed)
        kwargs = model_kwargs(model, data)
        x0s = [np.concatenate([
            (np.log(np.maximum(start[e.name], 1e-300)) if e.log else start[e.name]).ravel()
            for e in layout]) for start in start_points(model, data, initial)]
        fit, jac, costs = _least_squares(model, layout, arrays, kwargs, x0s, max_nfev)
        physical = {k: np.asarray(v) for k, v in _unpack(layout, jnp.asarray(fit.x)).items()}
    residual_values = np.asarray(fit.fun)
    std = _std_errors(layout, fit.x, jac, residual_values, known=model.noise == "known")
    if model.noise == "sampled":
        spec = model.prior[NOISE_PARAM]
        rms = _per_angle_rms(residual_values, arrays["phi_idx"], model.n_angles)
        physical[NOISE_PARAM] = np.clip(rms, spec.lower, spec.upper)
    init = to_site_values(model, _inside_priors(model, physical), data.t)
    points = {k: v for k, v in arrays.items() if k != "scale"}
    if model.noise == "known":
        points["sigma"] = arrays["scale"]
    sites, cov = (), None
    if laplace:
        scale = data.num_points / len(arrays["c2"])
        sites, cov = laplace_covariance(model, {**kwargs, **points}, init, scale)
    return WarmStart(init, physical, std, float(fit.cost), bool(fit.success), str(fit.message),
                     int(fit.nfev), int(arrays["c2"].shape[0]), sites, cov, tuple(costs))


def laplace_covariance(
    model: XPCSModel, inputs: Mapping[str, Any], site_values: Mapping[str, Any],
    likelihood_scale: float = 1.0,
) -> tuple[tuple[tuple[str, tuple[int, ...]], ...], np.ndarray | None]:
    """Inverse Hessian of the NumPyro potential at ``site_values`` in unconstrained space.

    inputs: model_kwargs and per-point data together; likelihood_scale: multiplies the
    Hessian (points in the full data / points in ``inputs``, when fitted on a subset).
    Returns ((site, shape), ...) in ``ravel_pytree`` order and the covariance, or None if
    the Hessian is not positive definite.
    """
    with jax.enable_x64(True):
        z = unconstrain_fn(model, (), dict(inputs), dict(site_values))
        flat, unravel = ravel_pytree(z)

        def potential(f):
            return potential_energy(model, (), dict(inputs), unravel(f))

        hessian = np.asarray(jax.jit(jax.hessian(potential))(flat)) * likelihood_scale
    layout = tuple((name, tuple(np.shape(z[name]))) for name in sorted(z))
    hessian = 0.5 * (hessian + hessian.T)
    try:
        chol = np.linalg.cholesky(hessian)
    except np.linalg.LinAlgError:
        return layout, None
    inv_chol = np.linalg.inv(chol)
    return layout, inv_chol.T @ inv_chol


def _inside_priors(model: XPCSModel, physical: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, value in physical.items():
        spec = model.prior[name]
        if spec.kind in LOG_PRIOR_KINDS:
            lo, hi = np.log(spec.lower), np.log(spec.upper)
            out[name] = np.exp(_interior(np.log(value), lo, hi))
        else:
            out[name] = _interior(value, spec.lower, spec.upper)
    return out


def _std_errors(layout: tuple[_Entry, ...], x: np.ndarray, jac: np.ndarray,
                residual: np.ndarray, *, known: bool) -> dict[str, np.ndarray]:
    n, p = jac.shape
    scale2 = 1.0 if known else float(residual @ residual) / max(n - p, 1)
    try:
        cov = np.linalg.inv(jac.T @ jac) * scale2
        var = np.diag(cov)
    except np.linalg.LinAlgError:
        var = np.full(p, np.nan)
    se_fit = np.sqrt(np.where(var >= 0, var, np.nan))
    out, i = {}, 0
    for e in layout:
        size = int(np.prod(e.shape, dtype=int))
        seg, se = x[i:i + size], se_fit[i:i + size]
        out[e.name] = (np.exp(seg) * se if e.log else se).reshape(e.shape)
        i += size
    return out
