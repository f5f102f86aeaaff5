"""The XPCS parameter table (bounds, units, default priors) and user prior overrides.

Every prior lives inside its parameter's bounds. Prior kinds:

* ``uniform``: Uniform(lower, upper) on the physical value.
* ``truncated_normal``: Normal(loc, scale) truncated to [lower, upper], physical units.
* ``log_uniform``: uniform in log(value) on [lower, upper] (lower > 0).
* ``log_normal``: Normal(log loc, scale) on log(value), truncated to the bounds; ``loc`` is
  the median in physical units, ``scale`` the standard deviation of log(value).

Log kinds are sampled as ``log_<name>`` (see :mod:`shardmc.xpcs.models`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from shardmc.errors import ShardMCInputError
from shardmc.xpcs.physics import PHYSICS_MODELS, PHYSICS_PARAMS

PRIOR_KINDS = ("uniform", "truncated_normal", "log_uniform", "log_normal")
LOG_PRIOR_KINDS = ("log_uniform", "log_normal")

#: Per-angle and noise sites (besides the physical parameters of each model).
SCALING_PARAMS = ("contrast", "offset")
NOISE_PARAM = "sigma"


class ParameterSpec(NamedTuple):
    """One row of the parameter table."""

    name: str
    lower: float
    upper: float
    unit: str
    description: str
    prior: str  # default prior kind
    default: float  # a typical value (initial guess, simulation default)


class PriorSpec(NamedTuple):
    """A resolved prior: hashable (strings, floats, None) so models can be jit-static."""

    name: str
    kind: str
    lower: float
    upper: float
    loc: float | None = None
    scale: float | None = None


_D_UNIT = "Å²/s^(α+1)"
_ROWS = (
    ParameterSpec("D0", 100.0, 1e5, _D_UNIT, "diffusion amplitude, J = D0 t^α + D_offset",
                  "log_uniform", 1e4),
    ParameterSpec("alpha", -2.0, 2.0, "-", "diffusion exponent", "uniform", 0.0),
    ParameterSpec("D_offset", -1e5, 1e5, "Å²/s", "constant diffusion rate", "uniform", 0.0),
    ParameterSpec("gamma_dot_0", 1e-6, 0.5, "s^-(β+1)", "shear-rate amplitude, γ̇ = γ̇0 t^β + γ̇_off",
                  "log_uniform", 1e-3),
    ParameterSpec("beta", -2.0, 2.0, "-", "shear-rate (or velocity) exponent", "uniform", 0.0),
    ParameterSpec("gamma_dot_offset", -0.1, 0.1, "s^-1", "constant shear rate", "uniform", 0.0),
    ParameterSpec("phi0", -10.0, 10.0, "deg", "flow-direction angle offset", "uniform", 0.0),
    ParameterSpec("D0_ref", 100.0, 1e6, _D_UNIT, "reference-component diffusion amplitude",
                  "log_uniform", 1e4),
    ParameterSpec("alpha_ref", -2.0, 2.0, "-", "reference-component diffusion exponent",
                  "uniform", 0.0),
    ParameterSpec("D_offset_ref", -1e5, 1e5, "Å²/s", "reference-component constant rate",
                  "uniform", 0.0),
    ParameterSpec("D0_sample", 100.0, 1e6, _D_UNIT, "sample-component diffusion amplitude",
                  "log_uniform", 1e4),
    ParameterSpec("alpha_sample", -2.0, 2.0, "-", "sample-component diffusion exponent",
                  "uniform", 0.0),
    ParameterSpec("D_offset_sample", -1e5, 1e5, "Å²/s", "sample-component constant rate",
                  "uniform", 0.0),
    ParameterSpec("v0", 1e-6, 1e4, "Å/s^(β+1)", "velocity amplitude, v = v0 t^β + v_offset",
                  "log_uniform", 1.0),
    ParameterSpec("v_offset", -100.0, 100.0, "Å/s", "constant velocity", "uniform", 0.0),
    ParameterSpec("f0", 0.0, 1.0, "-", "sample-fraction amplitude", "uniform", 0.5),
    ParameterSpec("f1", -10.0, 10.0, "s^-1", "sample-fraction rate", "uniform", 0.0),
    ParameterSpec("f2", -1e4, 1e4, "s", "sample-fraction time shift", "uniform", 0.0),
    ParameterSpec("f3", 0.0, 1.0, "-", "sample-fraction baseline", "uniform", 0.0),
    ParameterSpec("contrast", 0.0, 1.0, "-", "per-angle contrast (speckle visibility)",
                  "uniform", 0.5),
    ParameterSpec("offset", 0.5, 1.5, "-", "per-angle baseline of c2", "uniform", 1.0),
    ParameterSpec("sigma", 1e-6, 1.0, "-", "per-angle Gaussian noise scale of c2",
                  "log_uniform", 1e-2),
)

#: name -> ParameterSpec. Two-component phi0/beta share the homodyne rows (same bounds).
PARAMETER_TABLE: dict[str, ParameterSpec] = {row.name: row for row in _ROWS}


def model_parameter_names(physics: str) -> tuple[str, ...]:
    """Physical parameter names of ``physics`` in canonical order."""
    if physics not in PHYSICS_PARAMS:
        raise ShardMCInputError(f"physics: expected one of {PHYSICS_MODELS}, found {physics!r}")
    return PHYSICS_PARAMS[physics]


def default_prior(name: str) -> PriorSpec:
    """The table's default prior for ``name``."""
    row = PARAMETER_TABLE[name]
    return PriorSpec(name, row.prior, row.lower, row.upper)


def _as_prior(name: str, override: Any) -> PriorSpec:
    base = default_prior(name)
    if isinstance(override, PriorSpec):
        fields = override._asdict()
    elif isinstance(override, Mapping):
        unknown = set(override) - {"kind", "lower", "upper", "loc", "scale"}
        if unknown:
            raise ShardMCInputError(f"priors[{name!r}]: unknown key(s) {sorted(unknown)}; "
                                    "expected kind, lower, upper, loc, scale")
        fields = {**base._asdict(), **override}
    elif isinstance(override, tuple | list) and len(override) == 2:
        fields = {**base._asdict(), "lower": override[0], "upper": override[1]}
    else:
        raise ShardMCInputError(f"priors[{name!r}]: expected a PriorSpec, a dict or "
                                f"(lower, upper), found {override!r}")
    fields["name"] = name
    for key in ("lower", "upper", "loc", "scale"):
        if fields.get(key) is not None:
            fields[key] = float(fields[key])
    return validate_prior(PriorSpec(**fields))


def validate_prior(spec: PriorSpec) -> PriorSpec:
    """Check kind, bounds and loc/scale of a prior; raise ShardMCInputError naming it."""
    where = f"priors[{spec.name!r}]"
    if spec.kind not in PRIOR_KINDS:
        raise ShardMCInputError(f"{where}: expected kind one of {PRIOR_KINDS}, found {spec.kind!r}")
    if not (math.isfinite(spec.lower) and math.isfinite(spec.upper) and spec.lower < spec.upper):
        raise ShardMCInputError(f"{where}: expected finite lower < upper, found "
                                f"[{spec.lower}, {spec.upper}]")
    if spec.kind in LOG_PRIOR_KINDS and spec.lower <= 0:
        raise ShardMCInputError(f"{where}: expected lower > 0 for kind {spec.kind!r}, found "
                                f"{spec.lower}")
    if spec.kind in ("truncated_normal", "log_normal"):
        if spec.loc is None or spec.scale is None or not spec.scale > 0:
            raise ShardMCInputError(f"{where}: expected loc and scale > 0 for kind "
                                    f"{spec.kind!r}, found loc={spec.loc}, scale={spec.scale}")
        if not spec.lower <= spec.loc <= spec.upper:
            raise ShardMCInputError(f"{where}: expected loc within [{spec.lower}, "
                                    f"{spec.upper}], found loc={spec.loc}, outside the bounds")
    return spec


def resolve_priors(
    physics: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    scaling: bool = True,
    noise: bool = True,
) -> tuple[PriorSpec, ...]:
    """Priors of every site of ``physics`` (+ contrast/offset, + sigma), overrides applied.

    overrides: name -> PriorSpec, dict of PriorSpec fields, or (lower, upper) bounds.
    """
    names = list(model_parameter_names(physics))
    names += list(SCALING_PARAMS) if scaling else []
    names += [NOISE_PARAM] if noise else []
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ShardMCInputError(f"priors: unknown parameter(s) {unknown} for physics "
                                f"{physics!r}; expected some of {names}")
    return tuple(_as_prior(n, overrides[n]) if n in overrides else default_prior(n) for n in names)


def prior_table(priors: tuple[PriorSpec, ...]) -> dict[str, PriorSpec]:
    """name -> PriorSpec."""
    return {p.name: p for p in priors}


def describe(physics: str) -> str:
    """A text table of the parameters of ``physics`` (name, bounds, unit, default prior)."""
    lines = [f"{'name':<18}{'lower':>12}{'upper':>12}  {'unit':<12}{'prior':<14}description"]
    for name in (*model_parameter_names(physics), *SCALING_PARAMS, NOISE_PARAM):
        r = PARAMETER_TABLE[name]
        lines.append(f"{r.name:<18}{r.lower:>12.4g}{r.upper:>12.4g}  {r.unit:<12}{r.prior:<14}"
                     f"{r.description}")
    return "\n".join(lines)
