"""Backend benchmark: sequential vs processes vs jax on the regression and XPCS problems.

For K = 8, 32, 128 shards of one dataset it runs ``shardmc.fit`` with each backend and
reports wall time, the speedup of ``processes`` over ``sequential``, XLA compiles per
process (goal: one per program per shape per run) and compile time as a share of wall
time. Problems (``--problem``): ``regression`` (default 256 000 points, 5 coefficients)
and ``xpcs`` (homodyne static, 3 angles x ``--frames`` frames, 12 parameters, with the
XPCS defaults: stratified shards, least-squares warm start). Both use 2 chains; the
regression the default adaptive warmup/sample counts, XPCS a fixed ``XPCS_DRAWS``. Each
processes run starts a fresh pool, as a one-off ``fit`` does; its workers load programs
from the persistent compilation cache when it is warm (``cache_hits``). The sequential
and jax runs compile in this process without a persistent cache. CPU seconds (driver
process time for in-process runs, the workers' for processes) show the work done
independent of other load on the machine. Also measures the pool's start-up (spawn to
ready) and checks that all backends agree (bit for bit for processes). Prints one JSON
document.

Usage: python benchmarks/backends.py [--problem regression|xpcs] [--points N]
                                    [--frames N] [--shards 8 32 128] [--workers 2]
                                    [--backends processes jax] [--sequential-from JSON]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import shardmc
from shardmc.backends import ProcessesBackend
from shardmc.backends.compile_log import compile_log, diff
from shardmc.backends.jax_devices import JaxBackend
from shardmc.backends.resources import usable_cores
from shardmc.examples import linear_regression_data, linear_regression_known_noise

# benchmarks/dask.py would shadow the dask package (xarray imports it lazily): keep
# this script's folder off sys.path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(
    os.path.abspath(__file__))]

#: The per-shard programs whose compiles the goal counts (warmup_chain, sample_chain,
#: laplace_precision).
PROGRAMS = ("warmup", "sample", "laplace")


@dataclass(frozen=True)
class Problem:
    """A model, its data and the fit options every backend gets."""

    name: str
    model: Callable
    data: dict[str, np.ndarray]
    num_params: int
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        return len(next(iter(self.data.values())))


def regression_problem(num_points: int) -> Problem:
    """Linear regression with known noise, 5 coefficients."""
    return Problem("linear_regression_known_noise", linear_regression_known_noise,
                   linear_regression_data(num_points, 5, seed=0), 5)


#: XPCS warmup and sampling iterations per chain, fixed: the adaptive plan gives small
#: shards up to 3x more, which made K = 128 alone take longer than the whole regression run.
XPCS_DRAWS = (250, 500)


def xpcs_problem(num_frames: int) -> Problem:
    """Homodyne static, 3 angles (12 parameters), as ``shardmc run`` fits XPCS data
    (stratified shards, least-squares warm start), with :data:`XPCS_DRAWS`."""
    from shardmc import xpcs

    data, _ = xpcs.simulate("static", n_angles=3, n_t=num_frames, seed=0)
    model = xpcs.XPCSModel.create("static", data.n_phi)
    points, kwargs = xpcs.prepare(model, data)
    start = xpcs.warm_start(model, data, seed=0)
    options = {"model_kwargs": kwargs, "sharding": "stratified", "strata": points["phi_idx"],
               "init_strategy": "value", "init_values": start.init_values,
               "num_warmup": XPCS_DRAWS[0], "num_samples": XPCS_DRAWS[1],
               "adaptive_sampling": False}
    num_params = sum(int(np.size(v)) for v in start.init_values.values())
    return Problem("xpcs_homodyne_static", model, points, num_params, options)


def _fit(problem: Problem, k: int, seed: int, backend, chains: int):
    return shardmc.fit(problem.model, problem.data, k, seed=seed, backend=backend,
                       num_chains=chains, **problem.options)


def _program_compiles(compiles: dict[str, int]) -> dict[str, int]:
    return {p: sum(n for name, n in compiles.items() if p in name) for p in PROGRAMS}


def _in_process(problem: Problem, k: int, backend, chains: int) -> tuple[dict, np.ndarray]:
    log = compile_log()
    before, t0, c0 = log.snapshot(), time.perf_counter(), time.process_time()
    post = _fit(problem, k, 0, backend, chains)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    d = diff(log.snapshot(), before)
    times = np.array([s["total_time"] for s in post.provenance["shard_stats"]])
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "compile_s": round(d["compile_seconds"], 2),
            "compile_share": round(d["compile_seconds"] / wall, 3),
            "xla_compiles": _program_compiles(d["compiles"]),
            "shard_s_median": round(float(np.median(times)), 4),
            "plan": [post.provenance["plan"]["n_warmup"], post.provenance["plan"]["n_samples"]],
            }, post.unconstrained


def _warm_wall(problem: Problem, k: int, backend, chains: int) -> float:
    """Wall seconds of a second fit of the same shapes (programs compiled, pool running)."""
    t0 = time.perf_counter()
    _fit(problem, k, 1, backend, chains)
    return round(time.perf_counter() - t0, 2)


def _processes(problem: Problem, k: int, workers: int, chains: int) -> tuple[dict, np.ndarray]:
    with ProcessesBackend(workers=workers) as backend:
        t0 = time.perf_counter()
        post = _fit(problem, k, 0, backend, chains)
        wall = time.perf_counter() - t0
        run = backend.last_run
        warm = _warm_wall(problem, k, backend, chains)
    per_worker = list(run["workers"].values())
    compile_s = max(w["compile_seconds"] for w in per_worker)  # workers compile in parallel
    return {"wall_s": round(wall, 2), "warm_wall_s": warm, "workers": workers,
            "cpu_s": round(sum(w["cpu_seconds"] for w in per_worker), 2),
            "cpu_s_per_worker": [round(w["cpu_seconds"], 2) for w in per_worker],
            "compile_s_per_worker": [round(w["compile_seconds"], 2) for w in per_worker],
            "compile_share": round(compile_s / wall, 3),
            "xla_compiles_per_worker": [_program_compiles(w["compiles"]) for w in per_worker],
            "cache_hits_per_worker": [w["cache_hits"] for w in per_worker],
            "shards_per_worker": [w["shards"] for w in per_worker],
            "busy_s_per_worker": [round(w["busy_seconds"], 2) for w in per_worker],
            "peak_rss_mib_per_worker": [round(w["peak_rss"] / 2**20) for w in per_worker],
            }, post.unconstrained


def _say(text: str) -> None:
    """Progress on stderr (stdout carries the JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def pool_startup(workers: int) -> float:
    """Seconds from an idle backend to every worker ready and done with a trivial task."""
    with ProcessesBackend(workers=workers) as backend:
        t0 = time.perf_counter()
        list(backend.map(len, [[0]] * workers))
        return time.perf_counter() - t0


def _digest(draws: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(draws).tobytes()).hexdigest()


def _sequential(problem: Problem, k: int, chains: int, earlier: dict | None):
    """The sequential row (timings, plan, draws' SHA-256) and its draws: measured now, or
    taken from ``earlier`` (a previous output of this script for the same problem; draws
    None, bit-identity then checked against the recorded SHA-256 where there is one)."""
    if earlier is None:
        seq, ref = _in_process(problem, k, "sequential", chains)
        seq["warm_wall_s"] = _warm_wall(problem, k, "sequential", chains)
        seq["draws_sha256"] = _digest(ref)
        return seq.pop("plan"), seq, ref
    if earlier["problem"] != problem.name or earlier["num_points"] != problem.num_points:
        raise SystemExit("--sequential-from: that output is of another problem or size")
    row = next((r for r in earlier["results"] if r["num_shards"] == k), None)
    if row is None:
        raise SystemExit(f"--sequential-from: no K = {k} row in that output")
    return row["plan"], {**row["sequential"], "from_earlier_run": True}, None


def run(problem: Problem, shard_counts: list[int], workers: int, chains: int,
        backends: list[str], earlier: dict | None = None) -> dict:
    rows = []
    for k in shard_counts:
        row: dict = {"num_shards": k, "shard_points": -(-problem.num_points // k)}
        _say(f"{problem.name} K = {k}: sequential")
        row["plan"], seq, ref = _sequential(problem, k, chains, earlier)
        row["sequential"] = seq
        if "processes" in backends:
            _say(f"{problem.name} K = {k}: processes (sequential took {seq['wall_s']} s)")
            proc, p_draws = _processes(problem, k, workers, chains)
            # One-off fit (pool spawned, programs compiled) and a repeated fit on the same
            # pool and shapes (what a persistent pool gives a session of fits).
            proc["speedup_vs_sequential"] = round(seq["wall_s"] / proc["wall_s"], 2)
            proc["warm_speedup_vs_sequential"] = round(seq["warm_wall_s"]
                                                       / proc["warm_wall_s"], 2)
            # CPU seconds of the same work: near 1 means the pool adds no work, so the
            # wall speedup approaches the worker count on an otherwise idle machine.
            proc["cpu_ratio_vs_sequential"] = round(proc["cpu_s"] / seq["cpu_s"], 2)
            row["processes"] = proc
            ref_digest = seq.get("draws_sha256")
            row["processes_bit_identical"] = (None if ref_digest is None
                                              else _digest(p_draws) == ref_digest)
        if "jax" in backends:
            _say(f"{problem.name} K = {k}: jax")
            jx, j_draws = _in_process(problem, k, JaxBackend(), chains)
            jx.pop("plan")
            jx["speedup_vs_sequential"] = round(seq["wall_s"] / jx["wall_s"], 2)
            row["jax"] = jx
            if ref is not None:
                row["jax_max_mean_diff_in_sd"] = round(float(np.max(
                    np.abs(j_draws.mean(0) - ref.mean(0)) / ref.std(0))), 4)
        rows.append(row)
    return {"benchmark": "backends", "problem": problem.name,
            "num_points": problem.num_points, "num_params": problem.num_params,
            "chains_per_shard": chains,
            "machine": {"usable_cores": usable_cores(), "cpu": platform.processor() or
                        platform.machine(), "note": "shared with other developers' jobs: "
                        "timings are noisy"},
            "pool_startup_s": round(pool_startup(workers), 2), "results": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", choices=["regression", "xpcs"], default="regression")
    parser.add_argument("--points", type=int, default=256_000, help="regression points")
    parser.add_argument("--frames", type=int, default=200,
                        help="XPCS frames (3 angles x frames x (frames - 1) / 2 points)")
    parser.add_argument("--shards", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=["processes", "jax"],
                        choices=["processes", "jax"], help="compared with sequential")
    parser.add_argument("--sequential-from", metavar="JSON", default=None,
                        help="take sequential timings from an earlier output of this script "
                             "(e.g. to re-measure processes once the compile cache is warm)")
    args = parser.parse_args()
    shardmc.enable_x64()
    problem = (regression_problem(args.points) if args.problem == "regression"
               else xpcs_problem(args.frames))
    earlier = None
    if args.sequential_from:
        with open(args.sequential_from, encoding="utf-8") as f:
            earlier = json.load(f)
    print(json.dumps(run(problem, args.shards, args.workers, args.chains, args.backends,
                         earlier), indent=2))


if __name__ == "__main__":
    main()
