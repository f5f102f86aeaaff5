"""Why two_component shards diverge: the likelihood's flat directions at the simulator's truth.

Prints JSON. (1) The exact (f0, f2) ridge: f_s depends on f0 and f2 only through
f0·exp(−f1 f2), so c2 is unchanged under (f0, f2) → (f0·e^{f1 s}, f2 + s). (2) The
Gauss-Newton matrix JᵀJ of c2 (default data: 3 angles × 60 frames) in coordinates scaled
to each parameter's prior width (log width for log-prior parameters), its eigenvalues and
the parameters of its flattest directions. Run: python benchmarks/two_component_geometry.py
"""

from __future__ import annotations

import json
import math

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from shardmc.xpcs.parameters import PARAMETER_TABLE  # noqa: E402
from shardmc.xpcs.physics import TWO_COMPONENT_PARAMS, Geometry, c2_matrix  # noqa: E402
from shardmc.xpcs.synthetic import DEFAULT_TRUTH, default_angles  # noqa: E402

N_ANGLES, N_FRAMES, DT, Q, GAP, T0 = 3, 60, 0.1, 0.0054, 2.0e6, 0.1
RIDGE_SHIFTS_S = (-50.0, -10.0, 10.0)
#: Eigen-directions reported, flattest first.
FLAT_DIRECTIONS = 3
#: An eigenvalue below this fraction of the largest counts as a flat (null) direction.
NULL_FRACTION = 1e-12
#: The fraction parameters and phi0: no rate block reparameterises them.
FRACTION_PARAMS = ("f0", "f1", "f2", "f3", "phi0")


def _geometry() -> Geometry:
    t = T0 + DT * np.arange(N_FRAMES)
    return Geometry(jnp.asarray(t), DT, Q, GAP, jnp.asarray(default_angles(N_ANGLES)))


def _c2(params: dict, geometry: Geometry) -> jnp.ndarray:
    ones = jnp.ones(N_ANGLES)
    return c2_matrix("two_component", params, 0.3 * ones, ones, geometry)


def ridge(truth: dict, geometry: Geometry) -> dict:
    base = _c2(truth, geometry)
    out = {}
    for s in RIDGE_SHIFTS_S:
        moved = {**truth, "f0": truth["f0"] * math.exp(truth["f1"] * s), "f2": truth["f2"] + s}
        out[f"shift_{s:g}s"] = {"f0": moved["f0"], "f2": moved["f2"],
                                "max_abs_dc2": float(jnp.max(jnp.abs(_c2(moved, geometry) - base)))}
    return out


def _scaled(name: str, value: float) -> tuple[float, float]:
    """(sampler-like coordinate, width): log for log-prior parameters, else the value."""
    row = PARAMETER_TABLE[name]
    if row.prior == "log_uniform":
        return math.log(value), math.log(row.upper / row.lower)
    return value, row.upper - row.lower


def gauss_newton(truth: dict, geometry: Geometry, names: tuple[str, ...]) -> dict:
    """JᵀJ of c2 over ``names`` (the others held at the truth), scaled coordinates."""
    widths = np.array([_scaled(n, truth[n])[1] for n in names])
    z0 = jnp.zeros(len(names))

    def c2_of(z: jnp.ndarray) -> jnp.ndarray:
        params = dict(truth)
        for i, n in enumerate(names):
            x, w = _scaled(n, truth[n])
            v = x + z[i] * w
            params[n] = jnp.exp(v) if PARAMETER_TABLE[n].prior == "log_uniform" else v
        return _c2(params, geometry).ravel()

    jac = np.asarray(jax.jacfwd(c2_of)(z0))
    gn = jac.T @ jac
    evals, evecs = np.linalg.eigh(gn)
    flat = []
    for k in range(FLAT_DIRECTIONS):
        v = evecs[:, k]
        top = np.argsort(-np.abs(v))[:3]
        flat.append({"eigenvalue": float(evals[k]),
                     "parameters": {names[i]: round(float(v[i]), 3) for i in top}})
    return {"coordinates": "value / prior width (log value / log width for log priors)",
            "parameters": list(names), "eigenvalue_max": float(evals[-1]),
            "eigenvalue_min": float(evals[0]),
            "null_directions": int(np.sum(evals < NULL_FRACTION * evals[-1])),
            "flattest": flat, "prior_widths": dict(zip(names, widths.tolist(), strict=True))}


def main() -> None:
    truth = dict(DEFAULT_TRUTH["two_component"])
    geometry = _geometry()
    print(json.dumps({"data": f"{N_ANGLES} angles x {N_FRAMES} frames", "truth": truth,
                      "f0_f2_ridge": ridge(truth, geometry),
                      "gauss_newton_all": gauss_newton(truth, geometry, TWO_COMPONENT_PARAMS),
                      "gauss_newton_fraction": gauss_newton(truth, geometry, FRACTION_PARAMS)},
                     indent=2))


if __name__ == "__main__":
    main()
