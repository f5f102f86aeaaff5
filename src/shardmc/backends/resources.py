"""What the machine offers and what a run needs: cores, memory, and when a pool pays off.

The constants below were measured on the development machine (2 cores of an Intel Xeon,
24 GiB, JAX 0.10.2 CPU, float64) with ``benchmarks/memory.py`` and
``benchmarks/backends.py``; their output is in ``benchmarks/results/*-2cpu.json``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shardmc.errors import ShardMCInputError

GiB = 1024**3

# --- memory model of one process sampling one shard (bytes), see benchmarks/memory.py ---
#: Peak RSS of a worker that imported JAX + NumPyro and compiled the shard programs
#: cold (measured 447 MiB for the regression model; 305 MiB when the programs come from
#: the persistent compilation cache).
PROCESS_BASE_BYTES = 460 * 1024**2
#: Peak RSS per byte of shard data (measured 1.0: the device copy; the worker's view of
#: shared memory is counted once), with margin.
DATA_BYTES_FACTOR = 1.5
#: Peak RSS per shard point for the likelihood's and gradient's per-point temporaries
#: (measured ~75 bytes, about ten float64 arrays, for the regression model), with margin.
POINT_TEMP_BYTES = 128
#: Bytes per stored draw coordinate or statistic (float64), times a copy factor of 3
#: (device output, numpy copy, pickled result).
DRAW_BYTES = 8 * 3
#: NUTS statistics stored per draw besides the coordinates.
STATS_PER_DRAW = 7
#: Fraction of the available memory a run may plan to use.
MEMORY_SAFETY_FRACTION = 0.8

# --- when does a process pool beat in-process execution? see benchmarks/backends.py ---
#: Wall seconds from starting the pool to the first worker ready (spawn, import JAX and
#: NumPyro, load the shard programs from the persistent compilation cache).
POOL_STARTUP_SECONDS = 3.0
#: A pool needs at least this many shards to have anything to run in parallel.
POOL_MIN_SHARDS = 2
#: Per-iteration cost model of one NUTS chain: fixed seconds per iteration, plus
#: seconds per point per leapfrog step, times typical leapfrog steps per iteration.
#: Fitted to the regression benchmark (5 coefficients; 0.125 ms per chain-iteration at
#: 2 000 points, 0.39 ms at 8 000); richer models cost more per point, which only makes
#: the pool more attractive than this model says.
ITERATION_SECONDS = 4e-5
POINT_STEP_SECONDS = 6e-9
TYPICAL_LEAPFROG_STEPS = 7


@dataclass(frozen=True)
class Workload:
    """The shape of a run, as the engine knows it before sampling.

    shard_points: padded rows per shard; point_bytes: bytes of one row over all data
    arrays; counts are per chain; shard_observations: data points in the largest shard
    where a row carries several (XPCS frame rows), None: one per row; row_temp_bytes and
    program_bytes: the model's :class:`MemoryProfile` where it has one (None and 0:
    POINT_TEMP_BYTES per row and nothing beyond PROCESS_BASE_BYTES).
    """

    num_shards: int
    shard_points: int
    n_params: int
    num_chains: int
    num_warmup: int
    num_samples: int
    point_bytes: int = 8
    shard_observations: int | None = None
    row_temp_bytes: int | None = None
    program_bytes: int = 0


@dataclass(frozen=True)
class MemoryProfile:
    """What a model's own programs add to a process's peak memory (bytes), for models
    whose rows are wide (XPCS frame rows): ``row_temp_bytes`` per row of a shard for the
    likelihood's and gradient's temporaries (replacing POINT_TEMP_BYTES) and
    ``program_bytes`` once per process (compiling and holding larger programs). A model
    offers it as ``model.memory_profile(data, model_kwargs)``."""

    row_temp_bytes: int
    program_bytes: int = 0


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores (hyper-threads add little to NUMA-free NUTS), capped by usable cores."""
    import psutil

    return max(1, min(usable_cores(), psutil.cpu_count(logical=False) or usable_cores()))


def available_memory() -> int:
    """Bytes of memory available to new allocations without swapping."""
    import psutil

    return int(psutil.virtual_memory().available)


def estimate_memory(shard_points: int, n_params: int, num_chains: int, *,
                    num_samples: int = 1000, point_bytes: int = 8,
                    point_temp_bytes: int = POINT_TEMP_BYTES, program_bytes: int = 0) -> int:
    """Peak resident memory (bytes) of one process sampling one shard at a time.

    base + program_bytes + data x DATA_BYTES_FACTOR + points x point_temp_bytes + stored
    draws and statistics of all chains. Measured against peak RSS by
    ``benchmarks/memory.py`` (point_temp_bytes and program_bytes of XPCS frame rows:
    :data:`shardmc.xpcs.models.ROW_MEMORY`).
    """
    data = shard_points * (point_bytes * DATA_BYTES_FACTOR + point_temp_bytes)
    draws = num_chains * num_samples * (n_params + STATS_PER_DRAW) * DRAW_BYTES
    return int(PROCESS_BASE_BYTES + program_bytes + data + draws)


def workload_memory(w: Workload, processes: int = 1, shards_at_once: int = 1) -> int:
    """Peak memory (bytes) of ``processes`` processes each holding ``shards_at_once``
    shards in flight (the jax backend holds every shard of a device at once)."""
    temp = POINT_TEMP_BYTES if w.row_temp_bytes is None else w.row_temp_bytes
    one = estimate_memory(w.shard_points, w.n_params, w.num_chains,
                          num_samples=w.num_samples, point_bytes=w.point_bytes,
                          point_temp_bytes=temp)
    per_shard = one - PROCESS_BASE_BYTES
    base = PROCESS_BASE_BYTES + w.program_bytes
    return int(processes * (base + shards_at_once * per_shard))


def pool_memory(w: Workload, workers: int) -> int:
    """Peak bytes of ``workers`` local worker processes plus every shard's arrays (and mask)
    held once in shared memory for them."""
    segments = w.num_shards * w.shard_points * (w.point_bytes + 1)
    return workload_memory(w, processes=workers) + segments


def workers_that_fit(w: Workload, workers: int, available: int | None = None) -> int:
    """How many of ``workers`` pool processes (:func:`pool_memory`) fit in the safe share
    of memory, 0 to ``workers``."""
    available = available_memory() if available is None else available
    budget = MEMORY_SAFETY_FRACTION * available - pool_memory(w, 0)
    return max(0, min(workers, int(budget // workload_memory(w, processes=1))))


def check_memory(needed: int, what: str, available: int | None = None) -> None:
    """Refuse (ShardMCInputError) a plan whose estimate exceeds the safe share of memory."""
    available = available_memory() if available is None else available
    if needed > MEMORY_SAFETY_FRACTION * available:
        raise ShardMCInputError(
            f"memory: {what} needs about {needed / GiB:.1f} GiB (estimate) but "
            f"{available / GiB:.1f} GiB are available ({MEMORY_SAFETY_FRACTION:.0%} usable); "
            "use fewer workers, more (smaller) shards, fewer chains or draws, or a "
            "machine with more memory")


def estimate_shard_seconds(w: Workload) -> float:
    """Rough wall seconds of one shard's NUTS run (all chains, one after another)."""
    points = w.shard_points if w.shard_observations is None else w.shard_observations
    per_iter = ITERATION_SECONDS + POINT_STEP_SECONDS * points * TYPICAL_LEAPFROG_STEPS
    return w.num_chains * (w.num_warmup + w.num_samples) * per_iter


def pool_seconds_saved(n_shards: int, n_workers: int, shard_seconds: float) -> float:
    """Wall seconds a pool of ``n_workers`` saves on ``n_shards`` shards of
    ``shard_seconds`` each: (K - ceil(K / W)) shard times."""
    if n_workers < 1 or n_shards < 1:
        return 0.0
    return (n_shards - math.ceil(n_shards / min(n_workers, n_shards))) * shard_seconds


def should_use_pool(n_shards: int, n_workers: int, shard_seconds: float | None = None) -> bool:
    """Whether a pool of ``n_workers`` processes beats running ``n_shards`` in process.

    The pool saves (K - ceil(K / W)) shard times and costs POOL_STARTUP_SECONDS once.
    Without a time estimate, any K >= POOL_MIN_SHARDS with W >= 2 qualifies.
    """
    if n_workers < 2 or n_shards < POOL_MIN_SHARDS:
        return False
    if shard_seconds is None:
        return True
    return pool_seconds_saved(n_shards, n_workers, shard_seconds) > POOL_STARTUP_SECONDS


def check_count(value: Any, field: str, limit: int, what: str) -> int:
    """An integer in [1, limit], or ShardMCInputError naming the field."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ShardMCInputError(f"{field}: expected an integer >= 1, found {value!r}")
    if value > limit:
        raise ShardMCInputError(f"{field}: expected at most {limit} ({what}), found {value}")
    return value


def preflight(backend: Any, model: Callable, workload: Workload | None) -> None:
    """Checks before sampling, where the backend offers them: resources, model
    importability, and the memory estimate against available memory."""
    for name, args in (("validate_resources", ()), ("validate_model", (model,))):
        check = getattr(backend, name, None)
        if check is not None:
            check(*args)
    estimate = getattr(backend, "estimate_memory", None)
    if workload is not None and estimate is not None:
        check_memory(estimate(workload), f"backend {backend.capabilities.name!r}")
