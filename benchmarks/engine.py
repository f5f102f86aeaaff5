"""Engine benchmark: wall time, XLA compiles and per-shard sampling time for K = 1, 4, 16.

Problem: Bayesian linear regression with known noise (20 000 points, 5 coefficients).
Prints one JSON document. Usage: python benchmarks/engine.py [--points N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import shardmc
from shardmc.backends.compile_log import compile_log, diff
from shardmc.examples import linear_regression_data, linear_regression_known_noise

# benchmarks/dask.py would shadow the dask package (xarray imports it lazily): keep
# this script's folder off sys.path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(
    os.path.abspath(__file__))]


def run(num_points: int, shard_counts: list[int]) -> dict:
    shardmc.enable_x64()
    data = linear_regression_data(num_points, 5, seed=0)
    rows = []
    log = compile_log()
    for k in shard_counts:
        before = log.snapshot()
        t0 = time.perf_counter()
        post = shardmc.fit(linear_regression_known_noise, data, k, seed=0, num_chains=2)
        wall = time.perf_counter() - t0
        compiled = diff(log.snapshot(), before)
        stats = post.provenance["shard_stats"]
        per_shard = np.array([s["total_time"] for s in stats])
        rows.append({
            "num_shards": k,
            "wall_s": round(wall, 3),
            "xla_compiles": sum(compiled["compiles"].values()),
            "xla_compiles_by_function": compiled["compiles"],
            "compile_s": round(compiled["compile_seconds"], 3),
            "sampling_s_per_shard_median": round(float(np.median(per_shard)), 4),
            "sampling_s_per_shard_max": round(float(per_shard.max()), 4),
            "first_shard_s": round(float(per_shard[0]), 3),
            "warmup_samples_per_chain": [post.provenance["plan"]["n_warmup"],
                                         post.provenance["plan"]["n_samples"]],
        })
    return {"benchmark": "engine", "problem": "linear_regression_known_noise",
            "num_points": num_points, "num_params": 5, "backend": "sequential",
            "chains_per_shard": 2, "results": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    print(json.dumps(run(args.points, args.shards), indent=2))


if __name__ == "__main__":
    main()
