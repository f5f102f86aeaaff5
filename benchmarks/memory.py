"""Calibrate ``shardmc.backends.resources.estimate_memory`` against measured peak RSS.

Each configuration runs one shard of the regression problem in a fresh worker process
(``ProcessesBackend(workers=1)``), which reports its peak resident set size
(``getrusage`` ru_maxrss, i.e. what psutil reports as the process's peak). Prints one
JSON document: per configuration the measured peak, the estimate and their ratio.

Also one XPCS shard per physics and size on frame rows (the whole simulated data as one
shard, a few draws), where a row is the engine's "point" and its bytes cover all frames;
the estimate uses the model's ``memory_profile`` (``shardmc.xpcs.models.ROW_MEMORY``).

Usage: python benchmarks/memory.py [--quick] [--xpcs-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import psutil

from shardmc.backends import ProcessesBackend
from shardmc.backends.resources import estimate_memory
from shardmc.core.sampling import SamplerConfig, SamplingPlan, ShardSpec, run_shard, shard_key
from shardmc.examples import linear_regression_data, linear_regression_known_noise

# benchmarks/dask.py would shadow the dask package (xarray imports it lazily): keep
# this script's folder off sys.path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(
    os.path.abspath(__file__))]

#: (points, features, chains, samples per chain)
CONFIGS = [
    (1_000, 3, 2, 200),
    (30_000, 3, 2, 200),
    (100_000, 3, 2, 200),
    (300_000, 3, 2, 200),
    (100_000, 20, 2, 200),
    (300_000, 20, 2, 200),
    (10_000, 3, 4, 2_000),
    (10_000, 20, 4, 2_000),
]
MiB = 1024**2


def measure(points: int, features: int, chains: int, samples: int,
            cache: bool = True) -> dict:
    data = linear_regression_data(points, features, seed=0)
    config = SamplerConfig(num_warmup=100, num_samples=samples, num_chains=chains,
                           adaptive_sampling=False)
    plan = SamplingPlan.from_config(config, points, features)
    spec = ShardSpec(index=0, model=linear_regression_known_noise, data=data,
                     mask=np.ones(points, bool), model_kwargs={}, prior_scale=1.0,
                     seed_key=shard_key(0, 0), config=config, plan=plan,
                     observed_sites=frozenset({"y"}), padded=False)
    t0 = time.perf_counter()
    with ProcessesBackend(workers=1, compile_cache=cache) as backend:
        (result,) = list(backend.map(run_shard, [spec]))
        (worker,) = backend.last_run["workers"].values()
    point_bytes = sum(a[:1].nbytes for a in data.values())
    estimate = estimate_memory(points, features, chains, num_samples=samples,
                               point_bytes=point_bytes)
    return {"points": points, "features": features, "chains": chains, "samples": samples,
            "compiled": bool(worker["compiles"]) and not worker["cache_hits"],
            "data_mib": round(points * point_bytes / MiB, 1),
            "peak_rss_mib": round(worker["peak_rss"] / MiB, 1),
            "estimate_mib": round(estimate / MiB, 1),
            "estimate_over_peak": round(estimate / worker["peak_rss"], 2),
            "status": result.status, "wall_s": round(time.perf_counter() - t0, 1)}


#: XPCS shards on frame rows: (physics, angles, frames).
XPCS_CONFIGS = [("static", 3, 300), ("static", 3, 800), ("static", 3, 1600),
                ("laminar_flow", 3, 300), ("laminar_flow", 3, 800),
                ("two_component", 3, 300), ("two_component", 3, 800)]


def measure_xpcs(physics: str, n_angles: int, n_frames: int) -> dict:
    from shardmc import xpcs
    from shardmc.core.tempering import observed_site_names

    data, truth = xpcs.simulate(physics, n_angles=n_angles, n_t=n_frames, seed=0)
    model = xpcs.XPCSModel.create(physics, data.n_phi)
    rows, kwargs = xpcs.prepare(model, data)
    config = SamplerConfig(num_warmup=20, num_samples=20, num_chains=1,
                           adaptive_sampling=False, init_mass="identity")
    n_rows = rows["t1_idx"].size
    plan = SamplingPlan.from_config(config, data.num_points, len(model.sampled_sites))
    init = xpcs.to_site_values(model, truth, data.t)
    spec = ShardSpec(index=0, model=model, data=rows, mask=np.ones(n_rows, bool),
                     model_kwargs=kwargs, prior_scale=1.0, seed_key=shard_key(0, 0),
                     config=config, plan=plan,
                     observed_sites=observed_site_names(model, {**kwargs, **rows}),
                     init_values=init, padded=False)
    t0 = time.perf_counter()
    with ProcessesBackend(workers=1) as backend:
        (result,) = list(backend.map(run_shard, [spec]))
        (worker,) = backend.last_run["workers"].values()
    point_bytes = sum(a[:1].nbytes for a in rows.values())
    dim = int(sum(np.prod(s) for s in model.site_shapes.values()))
    profile = model.memory_profile(rows, kwargs)
    estimate = estimate_memory(n_rows, dim, 1, num_samples=20, point_bytes=point_bytes,
                               point_temp_bytes=profile.row_temp_bytes,
                               program_bytes=profile.program_bytes)
    return {"physics": physics, "angles": n_angles, "frames": n_frames, "rows": n_rows,
            "points": data.num_points, "row_bytes": point_bytes,
            "data_mib": round(n_rows * point_bytes / MiB, 1),
            "peak_rss_mib": round(worker["peak_rss"] / MiB, 1),
            "estimate_mib": round(estimate / MiB, 1),
            "estimate_over_peak": round(estimate / worker["peak_rss"], 2),
            "status": result.status, "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="first three configurations")
    parser.add_argument("--xpcs-only", action="store_true", help="only the XPCS shards")
    args = parser.parse_args()
    rows = []
    if not args.xpcs_only:
        rows = [measure(*CONFIGS[0], cache=False)]  # a cold compile (no persistent cache)
        rows += [measure(*c) for c in (CONFIGS[:3] if args.quick else CONFIGS)]
    xpcs_rows = [measure_xpcs(*c) for c in XPCS_CONFIGS]
    print(json.dumps({"benchmark": "memory", "host_memory_gib":
                      round(psutil.virtual_memory().total / 1024**3, 1), "rows": rows,
                      "xpcs_frame_rows": xpcs_rows}, indent=2))


if __name__ == "__main__":
    main()
