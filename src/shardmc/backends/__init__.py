"""Executors that map ``run_shard`` over shard specs: ``select_backend(name)``.

``sequential``: in process, one shard after another. ``processes``: a pool of spawned
worker processes on this machine. ``jax``: every shard in one compiled program, vmapped
and spread over the JAX devices. ``auto`` picks one from the machine and the workload.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

from shardmc.backends.base import Backend, BackendCapabilities
from shardmc.backends.processes import ProcessesBackend, importable
from shardmc.backends.resources import (
    POOL_MIN_SHARDS,
    POOL_STARTUP_SECONDS,
    Workload,
    estimate_memory,
    estimate_shard_seconds,
    physical_cores,
    pool_seconds_saved,
    preflight,
    should_use_pool,
    workers_that_fit,
)
from shardmc.backends.sequential import SequentialBackend
from shardmc.errors import ShardMCInputError


def _jax_backend(**options: Any) -> Backend:
    from shardmc.backends.jax_devices import JaxBackend  # imports JAX

    return JaxBackend(**options)


def _dask_backend(**options: Any) -> Backend:
    from shardmc.backends.dask_cluster import DaskBackend  # imports dask.distributed

    return DaskBackend(**options)


#: Backend names and their factories.
BACKENDS: dict[str, Any] = {"sequential": SequentialBackend, "processes": ProcessesBackend,
                            "jax": _jax_backend, "dask": _dask_backend}


class BackendChoice(NamedTuple):
    """What ``auto`` picked (a name of :data:`BACKENDS`) and why, in one sentence;
    ``workers``: the pool size where memory allows fewer than one per core (None: the
    backend's default)."""

    name: str
    reason: str
    workers: int | None = None


def backend_choice(workload: Workload | None, model: Any = None) -> BackendChoice:
    """The ``auto`` choice and its reason: ``jax`` when JAX has an accelerator (all shards
    in one program); on CPU ``processes`` when a pool pays off (:func:`should_use_pool`)
    and its workers can import ``model`` (as many workers as fit in memory, at least 2),
    else ``sequential``. (On CPU the vmapped program
    runs chains in lockstep and was 2-3x slower than ``sequential`` in
    ``benchmarks/backends.py``, so CPU never gets ``jax``.)"""
    import jax

    platform = jax.default_backend()
    if platform != "cpu":
        return BackendChoice("jax", f"JAX has an accelerator ({platform}): every shard in "
                                    "one compiled program")
    if workload is None:
        return BackendChoice("sequential", "no workload given to size a pool by")
    cores = physical_cores()
    if workload.num_shards < POOL_MIN_SHARDS or cores < 2:
        what = ("one shard" if workload.num_shards < POOL_MIN_SHARDS
                else f"{cores} physical core")
        return BackendChoice("sequential", f"{what}: nothing runs side by side")
    workers = min(cores, workload.num_shards)
    fit = workers_that_fit(workload, workers)
    if fit < 2:
        return BackendChoice("sequential", f"memory: {workers} workers would not fit in the "
                             "available memory (estimate); one process runs the shards in turn")
    capped = fit < workers
    workers = fit
    shard_seconds = estimate_shard_seconds(workload)
    saved = pool_seconds_saved(workload.num_shards, workers, shard_seconds)
    if not should_use_pool(workload.num_shards, workers, shard_seconds):
        return BackendChoice("sequential", f"a pool of {workers} workers would save about "
                             f"{saved:.1f} s (estimate), less than the "
                             f"{POOL_STARTUP_SECONDS:.0f} s it takes to start")
    if model is not None:
        try:
            importable(model, "model")
        except ShardMCInputError as exc:
            return BackendChoice("sequential", f"worker processes cannot import the model "
                                 f"({exc})")
    limit = " (as many as fit in memory)" if capped else ""
    return BackendChoice("processes", f"{workers} workers{limit} on {cores} physical cores "
                         f"save about {saved:.0f} s of "
                         f"{workload.num_shards * shard_seconds:.0f} s of sampling (estimate)",
                         workers if capped else None)


def choose_backend(workload: Workload | None) -> str:
    """The name :func:`backend_choice` picks for ``workload``."""
    return backend_choice(workload).name


def _accepted(factory: Any, options: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    return {k: v for k, v in options.items() if k in params}


def select_backend(name: str | Backend = "auto", *, workload: Workload | None = None,
                   model: Any = None, choice: BackendChoice | None = None,
                   **options: Any) -> Backend:
    """A backend instance by name; an object that already has ``map`` is returned as is
    (duck-typed extension point). ``auto`` uses ``choice`` where the caller made it, else
    :func:`backend_choice` of ``workload`` and ``model``, and drops options the chosen
    backend does not take."""
    if hasattr(name, "map"):
        return name  # type: ignore[return-value]
    auto = name == "auto"
    if auto:
        choice = choice or backend_choice(workload, model)
        name = choice.name
    if name not in BACKENDS:
        raise ShardMCInputError(
            f"backend: expected one of {['auto', *sorted(BACKENDS)]}, found {name!r}"
        )
    factory = BACKENDS[name]
    if auto and choice.workers is not None and "workers" not in options:
        options = {**options, "workers": choice.workers}
    if auto:
        if factory is _jax_backend:  # the lazy factory takes **options: check the class
            from shardmc.backends.jax_devices import JaxBackend

            options = _accepted(JaxBackend, options)
        else:
            options = _accepted(factory, options)
    return factory(**options)


__all__ = ["BACKENDS", "Backend", "BackendCapabilities", "BackendChoice", "ProcessesBackend",
           "SequentialBackend", "Workload", "backend_choice", "choose_backend",
           "estimate_memory", "preflight", "select_backend", "should_use_pool"]
