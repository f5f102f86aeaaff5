"""Short NUTS probes of one two_component shard: which change makes its trajectories short.

Each case simulates the default data (3 angles × 60 frames, seed 0, t0 = 0.1 s), takes the
least-squares warm start (from the table's starts, or from the truth), and runs one shard
(K = 1, one chain) through ``shardmc.fit`` with few iterations and a capped tree depth, so
a case takes ~2 min on 2 cores instead of the full run's 20+. Prints one JSON object per
case: warm-start cost, divergent fraction, mean leapfrog steps per draw (the cap is
2^depth − 1), wall time, and each physical parameter's posterior mean, sd and truth.

Run: python benchmarks/two_component_probe.py [case ...]   (cases: see CASES)
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

import shardmc
from shardmc import xpcs

# benchmarks/dask.py would shadow the dask package (xarray imports it lazily): keep
# this script's folder off sys.path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(
    os.path.abspath(__file__))]

N_ANGLES, N_FRAMES, SEED, T0 = 3, 60, 0, 0.1
#: Probe length: warmup and draws per chain, and the tree-depth cap (the run uses 10).
NUM_WARMUP, NUM_SAMPLES, MAX_TREE_DEPTH = 200, 100, 8
_PINNED_EXPONENTS = {"alpha_ref": [-0.01, 0.01], "alpha_sample": [-0.01, 0.01],
                     "beta": [-0.01, 0.01]}
#: name -> (truth overrides, prior overrides, start from the truth, warmup).
CASES = {
    "default": ({}, {}, False, NUM_WARMUP),
    "from_truth": ({}, {}, True, NUM_WARMUP),
    "no_block_nulls": ({"alpha_ref": -0.3, "D_offset_ref": 500.0, "alpha_sample": 0.4,
                        "D_offset_sample": 200.0, "beta": 0.5, "v_offset": 5.0}, {}, True,
                       NUM_WARMUP),
    "f2_pinned": ({}, {"f2": [4.9, 5.1]}, True, NUM_WARMUP),
    "exponents_pinned": ({}, _PINNED_EXPONENTS, False, NUM_WARMUP),
    "exponents_and_f2_pinned": ({}, {**_PINNED_EXPONENTS, "f2": [4.9, 5.1]}, False,
                                NUM_WARMUP),
    "long_warmup": ({}, {}, False, 3 * NUM_WARMUP),
}


def probe(name: str) -> dict:
    truth_over, priors, from_truth, num_warmup = CASES[name]
    data, truth = xpcs.simulate("two_component", truth_over, n_angles=N_ANGLES, n_t=N_FRAMES,
                                seed=SEED, t0=T0)
    model = xpcs.XPCSModel.create("two_component", data.n_phi, priors=priors or None)
    points, kwargs = xpcs.prepare(model, data)
    initial = {k: truth[k] for k in model.parameter_names} if from_truth else None
    start = xpcs.warm_start(model, data, laplace=False, initial=initial)
    t0 = time.perf_counter()
    post = shardmc.fit(model, points, 1, model_kwargs=kwargs, sharding="stratified",
                       strata=points["phi_idx"], init_strategy="value",
                       init_values=start.init_values, backend="sequential",
                       num_warmup=num_warmup, num_samples=NUM_SAMPLES, num_chains=1,
                       max_tree_depth=MAX_TREE_DEPTH, max_attempts=1,
                       adaptive_sampling=False, divergence_threshold=1.0)
    stats = post.shard_stats
    return {
        "case": name, "truth_overrides": truth_over, "prior_overrides": priors,
        "start": "truth" if from_truth else "table starts", "num_warmup": num_warmup,
        "warm_start_cost": start.cost, "start_costs": list(start.start_costs),
        "fit_seconds": round(time.perf_counter() - t0, 1),
        "divergent": float(np.mean(stats["diverging"])),
        "mean_leapfrog_steps": float(np.mean(stats["n_steps"])),
        "step_cap": 2**MAX_TREE_DEPTH - 1,
        "posterior": {k: [float(np.mean(post.samples[k])), float(np.std(post.samples[k])),
                          truth[k]] for k in model.parameter_names},
    }


def main(names: list[str]) -> None:
    shardmc.enable_x64()
    for name in names or list(CASES):
        print(json.dumps(probe(name)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
