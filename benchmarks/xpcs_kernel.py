"""Throughput of the XPCS log-density and its gradient (what NUTS evaluates every step).

For each physics model, simulated data of 3 angles x 817 frames (1 000 008 points, the
upper triangles), times ``jax.value_and_grad`` of the model's potential energy (NumPyro,
unconstrained space: prior + Jacobian + likelihood; data already on the device, as in the
NUTS programs) on the same data in three layouts, side
by side in one run: pooled points (the point-list kernel), dense frame rows with the
structured kernel (``likelihood="rows"``, the default; dense broadcasts where the physics
does not factor) and frame rows with the dense kernel (``row_kernel="dense"``). Reports
points/s and the ratio to the point-list kernel. Beside them, on frame rows:

* ``rows_vmap``: the structured kernel vmapped over ``--chains`` parameter sets (as the
  jax backend runs its chains), time per set: the kernels' branches must stay branches
  under vmap (:mod:`shardmc.xpcs.batch_cond`), so this is close to ``rows``;
* ``data_floor``: the two passes over the row data that any value and gradient needs (a
  matrix-vector product and a vector-matrix product of the (R, C) data array), the
  memory-bandwidth floor of the structured kernels.

Prints one JSON document.

    python benchmarks/xpcs_kernel.py [--frames 817] [--angles 3] [--min-time 2.0] [--chains 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import jax
import numpy as np

# benchmarks/dask.py would shadow the dask package (xarray imports it lazily): keep
# this script's folder off sys.path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(
    os.path.abspath(__file__))]

#: 3 angles x 817 frames = 1 000 008 points (the issue's 10⁶-point case).
N_FRAMES = 817
N_ANGLES = 3
PHYSICS = ("static", "laminar_flow", "two_component")
#: Layouts timed: name -> XPCSModel options.
LAYOUTS = {"points": {"likelihood": "points"},
           "rows": {"likelihood": "rows"},
           "rows_dense": {"likelihood": "rows", "row_kernel": "dense"}}


def _time(fn, min_time: float) -> tuple[float, float, int]:
    """(median, min) seconds per call over >= 5 calls and >= min_time s, after a warm call."""
    fn()  # warm (compile)
    times: list[float] = []
    while sum(times) < min_time or len(times) < 5:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(np.min(times)), len(times)


def bench_physics(physics: str, n_frames: int, n_angles: int, min_time: float,
                  chains: int = 4) -> dict[str, Any]:
    import dataclasses

    from numpyro.infer.util import potential_energy, unconstrain_fn

    from shardmc import xpcs

    data, truth = xpcs.simulate(physics, n_angles=n_angles, n_t=n_frames, seed=0)
    base = xpcs.XPCSModel.create(physics, data.n_phi)
    out: dict[str, Any] = {"physics": physics, "points": data.num_points, "layouts": {}}
    z = None
    for name, options in LAYOUTS.items():
        model = dataclasses.replace(base, **options)
        arrays, kwargs = xpcs.prepare(model, data)
        # on the device once, as inside the NUTS programs: numpy inputs would be copied
        # to the device on every call (measured 1.5 ms of static's 3.6 ms at 10⁶ points)
        inputs = jax.device_put({**kwargs, **arrays})
        if z is None:
            z = unconstrain_fn(model, (), inputs, xpcs.to_site_values(model, truth, data.t))

        @jax.jit
        def vg(z, kw, model=model):
            return jax.value_and_grad(lambda zz: potential_energy(model, (), kw, zz))(z)

        def call(vg=vg, inputs=inputs, z=z):
            jax.block_until_ready(vg(z, inputs))

        per_eval, best, reps = _time(call, min_time)  # its first call compiles
        out["layouts"][name] = {
            "value_and_grad_s": per_eval, "best_value_and_grad_s": best, "reps": reps,
            "points_per_s": data.num_points / per_eval,
            "array_mb": round(sum(np.asarray(v).nbytes for v in arrays.values()) / 1e6, 1)}
        if name == "rows":
            out["layouts"]["rows_vmap"] = _vmapped(vg, z, inputs, chains, min_time,
                                                   data.num_points)
            out["layouts"]["data_floor"] = _data_floor(arrays["c2"], min_time,
                                                       data.num_points)
    ref = out["layouts"]["points"]["value_and_grad_s"]
    for entry in out["layouts"].values():
        entry["speedup_vs_points"] = ref / entry["value_and_grad_s"]
    return out


def _vmapped(vg, z, inputs, chains: int, min_time: float, points: int) -> dict[str, Any]:
    """vg vmapped over ``chains`` copies of z, 1 % apart (the same kernel branch)."""
    zs = jax.tree.map(lambda v: jax.numpy.stack([v * (1 + 0.01 * i) for i in range(chains)]),
                      z)
    batched = jax.jit(jax.vmap(vg, in_axes=(0, None)))

    def call():
        jax.block_until_ready(batched(zs, inputs))

    per_call, best, reps = _time(call, min_time)
    return {"chains": chains, "value_and_grad_s": per_call / chains,
            "best_value_and_grad_s": best / chains, "reps": reps,
            "points_per_s": points * chains / per_call}


def _data_floor(rows_c2: np.ndarray, min_time: float, points: int) -> dict[str, Any]:
    """Seconds of y @ e and u @ y on the (R, C) row data: what value and gradient read."""
    y = jax.numpy.asarray(rows_c2)
    e, u = jax.numpy.ones(y.shape[1]), jax.numpy.ones(y.shape[0])
    passes = jax.jit(lambda y, e, u: (y @ e, u @ y))

    def call():
        jax.block_until_ready(passes(y, e, u))

    per_call, best, reps = _time(call, min_time)
    return {"value_and_grad_s": per_call, "best_value_and_grad_s": best, "reps": reps,
            "points_per_s": points / per_call, "bytes_read": 2 * y.nbytes,
            "gb_per_s": 2 * y.nbytes / per_call / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=N_FRAMES)
    parser.add_argument("--angles", type=int, default=N_ANGLES)
    parser.add_argument("--physics", nargs="+", default=list(PHYSICS))
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--chains", type=int, default=4, help="parameter sets of rows_vmap")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    results = [bench_physics(p, args.frames, args.angles, args.min_time, args.chains)
               for p in args.physics]
    print(json.dumps({
        "benchmark": "xpcs_kernel",
        "what": "value_and_grad of the NumPyro potential (prior + likelihood), float64, "
                "points vs frame rows on the same data",
        "n_frames": args.frames,
        "n_angles": args.angles,
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_end": os.getloadavg()[0],
        "timing": "median per call over >= 5 calls and >= min_time s (best also given)",
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
