"""Dask backend benchmark: its per-shard overhead over the processes backend.

Many tiny shards of the conjugate regression problem (``linear_regression_known_noise``,
a fixed number of points per shard, short fixed NUTS runs), so the wall time is mostly
the backends' own work: shipping a shard's arrays, scheduling, returning the result. For
K = 32 and 128 shards it runs ``shardmc.fit`` on a warm ``processes`` pool and on a warm
``LocalCluster`` with the same number of workers (programs already compiled, best of
``--repeats``), and reports per-shard overhead = (dask wall - processes wall) / K (goal:
< 50 ms per shard), plus both start-up times (first trivial task on every worker) and
whether the draws are bit-identical to ``sequential``. Prints one JSON document.

Usage: python benchmarks/dask.py [--shards 32 128] [--workers 2] [--points-per-shard 200]
                                 [--repeats 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is called dask.py: keep its folder off sys.path so ``import dask`` finds dask.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import shardmc  # noqa: E402
from shardmc.backends import ProcessesBackend  # noqa: E402
from shardmc.backends.dask_cluster import DaskBackend  # noqa: E402
from shardmc.backends.resources import usable_cores  # noqa: E402
from shardmc.examples import linear_regression_data, linear_regression_known_noise  # noqa: E402

#: Fixed, short NUTS runs (no adaptive scaling): the shards' own work stays small.
SAMPLER = {"num_chains": 1, "num_warmup": 50, "num_samples": 50, "adaptive_sampling": False}
#: Per-shard overhead the dask backend should stay under (seconds).
GOAL_OVERHEAD_S = 0.050


def _backends_helpers():
    """benchmarks/backends.py (its pool start-up measurement), loaded by path."""
    spec = importlib.util.spec_from_file_location("_bench_backends", _HERE / "backends.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fit(data, k: int, backend) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    post = shardmc.fit(linear_regression_known_noise, data, k, seed=0, backend=backend,
                       sharding="contiguous", **SAMPLER)
    return time.perf_counter() - t0, post.unconstrained


def dask_startup(workers: int) -> float:
    """Seconds from an idle dask backend to every worker done with a trivial task."""
    with DaskBackend(workers=workers) as backend:
        t0 = time.perf_counter()
        list(backend.map(len, [[0]] * workers))
        return time.perf_counter() - t0


def run(shard_counts: list[int], workers: int, points_per_shard: int, repeats: int) -> dict:
    shardmc.enable_x64()
    rows = []
    with ProcessesBackend(workers=workers) as pool, DaskBackend(workers=workers) as cluster:
        for k in shard_counts:
            data = linear_regression_data(k * points_per_shard, 3, seed=0)
            seq_wall, reference = _fit(data, k, "sequential")
            walls: dict[str, list[float]] = {"processes": [], "dask": []}
            identical = True
            for name, backend in (("processes", pool), ("dask", cluster)):
                _fit(data, k, backend)  # warm: workers compiled this shape
                for _ in range(repeats):
                    wall, draws = _fit(data, k, backend)
                    walls[name].append(round(wall, 3))
                    identical = identical and bool(np.array_equal(draws, reference))
            best = {name: min(w) for name, w in walls.items()}
            overhead = (best["dask"] - best["processes"]) / k
            rows.append({"num_shards": k, "sequential_wall_s": round(seq_wall, 3),
                         "processes_wall_s": walls["processes"], "dask_wall_s": walls["dask"],
                         "dask_overhead_ms_per_shard": round(1000 * overhead, 2),
                         "goal_met": overhead < GOAL_OVERHEAD_S,
                         "bit_identical_to_sequential": identical})
    return {"benchmark": "dask", "problem": "linear_regression_known_noise (3 coefficients)",
            "points_per_shard": points_per_shard, "sampler": SAMPLER, "workers": workers,
            "repeats": repeats, "goal_overhead_ms_per_shard": 1000 * GOAL_OVERHEAD_S,
            "startup_s": {"processes": round(_backends_helpers().pool_startup(workers), 2),
                          "dask_local_cluster": round(dask_startup(workers), 2)},
            "machine": {"usable_cores": usable_cores(),
                        "cpu": platform.processor() or platform.machine(),
                        "note": "shared with other developers' jobs: timings are noisy"},
            "results": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--points-per-shard", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.shards, args.workers, args.points_per_shard, args.repeats),
                     indent=2))


if __name__ == "__main__":
    main()
