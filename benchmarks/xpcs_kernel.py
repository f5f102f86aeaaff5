"""Throughput of the XPCS log-density and its gradient (what NUTS evaluates every step).

For each physics model and 10⁴, 10⁵, 10⁶ pooled points, times ``jax.value_and_grad`` of
the model's potential energy (NumPyro, unconstrained space: prior + Jacobian +
likelihood) and a plain NumPy pass that reads every per-point array once (the
memory-traffic yardstick). Prints one JSON document.

    python benchmarks/xpcs_kernel.py [--sizes 10000 100000 1000000] [--min-time 1.0]
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

#: Frames of the synthetic grid (points are drawn from its upper triangle).
N_FRAMES = 1000
N_ANGLES = 3
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
PHYSICS = ("static", "laminar_flow", "two_component")


def _points(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t1 = rng.integers(0, N_FRAMES - 1, size=n)
    t2 = t1 + 1 + (rng.random(n) * (N_FRAMES - 1 - t1)).astype(np.int64)
    return {
        "phi_idx": rng.integers(0, N_ANGLES, size=n).astype(np.int32),
        "t1_idx": t1.astype(np.int32),
        "t2_idx": np.minimum(t2, N_FRAMES - 1).astype(np.int32),
        "c2": 1.0 + 0.3 * rng.random(n),
    }


def _time(fn, min_time: float) -> tuple[float, float, int]:
    """(median, min) seconds per call over >= 5 calls and >= min_time s, after a warm call."""
    fn()  # warm (compile)
    times: list[float] = []
    while sum(times) < min_time or len(times) < 5:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(np.min(times)), len(times)


def _numpy_pass(data: dict[str, np.ndarray]) -> float:
    return float(data["c2"].sum() + data["phi_idx"].sum() + data["t1_idx"].sum()
                 + data["t2_idx"].sum())


def bench_one(physics: str, n: int, min_time: float) -> dict[str, Any]:
    from numpyro.infer.util import initialize_model, potential_energy

    from shardmc import xpcs

    data = _points(n)
    t = xpcs.DEFAULT_DT * np.arange(N_FRAMES, dtype=np.float64)
    model = xpcs.XPCSModel.create(physics, N_ANGLES)
    kwargs = {"t": t, "dt": np.float64(xpcs.DEFAULT_DT), "q": np.float64(xpcs.DEFAULT_Q),
              "gap": np.float64(xpcs.DEFAULT_GAP), "phi": np.array([0.0, 45.0, 90.0])}
    all_kwargs = {**kwargs, **data}
    info = initialize_model(jax.random.key(0), model, model_kwargs=all_kwargs)[0]
    z = info.z

    @jax.jit
    def vg(z, kw):
        return jax.value_and_grad(lambda zz: potential_energy(model, (), kw, zz))(z)

    def run():
        jax.block_until_ready(vg(z, all_kwargs))

    per_eval, best_eval, reps = _time(run, min_time)
    per_numpy, best_numpy, _ = _time(lambda: _numpy_pass(data), min_time / 4)
    return {
        "physics": physics,
        "points": n,
        "value_and_grad_s": per_eval,
        "evals_per_s": 1.0 / per_eval,
        "points_per_s": n / per_eval,
        "numpy_pass_s": per_numpy,
        "ratio_to_numpy_pass": per_eval / per_numpy,
        "best_value_and_grad_s": best_eval,
        "best_numpy_pass_s": best_numpy,
        "reps": reps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--physics", nargs="+", default=list(PHYSICS))
    parser.add_argument("--min-time", type=float, default=1.0)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    results = [bench_one(p, n, args.min_time) for p in args.physics for n in args.sizes]
    print(json.dumps({
        "benchmark": "xpcs_kernel",
        "what": "value_and_grad of the NumPyro potential (prior + likelihood), float64",
        "n_frames": N_FRAMES,
        "n_angles": N_ANGLES,
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_end": os.getloadavg()[0],
        "timing": "median per call (best also given); numpy pass = one read of each "
                  "per-point array (sum), the memory-traffic yardstick",
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
