"""Which assignment of frame rows makes CMC shards that combine well: a measurement.

Simulated laminar_flow data (3 angles x 100 frames, 14 850 points, seed 4: the data of
tests/statistical/test_xpcs_rows_accuracy.py), K = 8 shards of frame rows assigned four
ways — ``stratified`` (random rows within each angle), ``random`` (random rows) and
``interleaved`` (every K-th row per angle, dealt back and forth) — plus the point lists
sharded ``stratified`` as before rows. (``contiguous`` rows, one window of t1 per shard
with 703-3 059 points, ran over 10 minutes without finishing and are left out.)
Every fit uses the same warm start and sampler; each is compared with full-data NUTS
(K = 1, 4 chains x 1500 draws): per physical parameter the consensus mean error in
reference sds, then the same after the importance correction with its Pareto k-hat and
importance ESS, and the spread of points per shard. Prints one JSON document.

    python benchmarks/xpcs_row_sharding.py [--physics laminar_flow] [--frames 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(
    os.path.abspath(__file__))]

SAMPLER = {"num_chains": 2, "num_warmup": 300, "num_samples": 1000, "adaptive_sampling": False}
REFERENCE = {"num_chains": 4, "num_warmup": 500, "num_samples": 1500, "adaptive_sampling": False}
NUM_SHARDS = 8
SEED = 4
#: (name, likelihood, sharding strategy)
LAYOUTS = [("rows, stratified", "rows", "stratified"), ("rows, random", "rows", "random"),
           ("rows, interleaved", "rows", "interleaved"),
           ("points, stratified", "points", "stratified")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--physics", default="laminar_flow")
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args()
    import shardmc
    from shardmc import xpcs
    from shardmc.core.engine import observation_counts
    from shardmc.core.sharding import assign_points

    shardmc.enable_x64()
    data, _ = xpcs.simulate(args.physics, n_angles=3, n_t=args.frames, seed=SEED)
    rows_model = xpcs.XPCSModel.create(args.physics, data.n_phi)
    start = xpcs.warm_start(rows_model, data, seed=SEED, laplace=False)
    init = {"init_strategy": "value", "init_values": start.init_values}
    names = rows_model.parameter_names
    rows, kwargs = xpcs.prepare(rows_model, data)
    began = time.perf_counter()
    ref = shardmc.fit(rows_model, rows, 1, model_kwargs=kwargs, seed=1, **REFERENCE, **init)
    results = [{"layout": "full-data NUTS (reference)",
                "wall_s": round(time.perf_counter() - began, 1)}]

    def errors(post):
        return {n: round(float((post.samples[n].mean() - ref.samples[n].mean())
                               / ref.samples[n].std()), 3) for n in names}

    for name, likelihood, strategy in LAYOUTS:
        model = rows_model if likelihood == "rows" else rows_model.with_points()
        arrays, kw = xpcs.prepare(model, data)
        strata = arrays["phi_idx"] if strategy in ("stratified", "interleaved") else None
        began = time.perf_counter()
        post = shardmc.fit(model, arrays, NUM_SHARDS, model_kwargs=kw, seed=SEED,
                           sharding=strategy, strata=strata, **SAMPLER, **init)
        wall = time.perf_counter() - began
        refined = shardmc.importance_refine(post, model, arrays, model_kwargs=kw, seed=SEED,
                                            num_draws=8000)
        layout = assign_points(arrays["phi_idx"].size, NUM_SHARDS, strategy, seed=SEED,
                               strata=strata)
        counts = observation_counts(model, arrays, kw)
        points = (counts[layout.indices] * layout.mask).sum(axis=1).tolist()
        refine = refined.provenance["refine"]
        results.append({
            "layout": name, "wall_s": round(wall, 1),
            "points_per_shard": {"min": min(points), "max": max(points)},
            "consensus_mean_error_sd": errors(post),
            "refined_mean_error_sd": errors(refined),
            "pareto_k": round(float(refine["pareto_k"]), 3),
            "importance_ess": refine["importance_ess"], "refine_applied": refine["applied"],
            "shard_warnings": len(post.warnings())})
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "xpcs_row_sharding", "physics": args.physics,
                      "n_angles": 3, "n_frames": args.frames, "points": data.num_points,
                      "num_shards": NUM_SHARDS, "sampler": SAMPLER, "reference": REFERENCE,
                      "refine_draws": 8000, "cpu_count": os.cpu_count(), "results": results},
                     indent=2))


if __name__ == "__main__":
    main()
