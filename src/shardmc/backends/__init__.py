"""Executors that map ``run_shard`` over shard specs: ``select_backend(name)``.

``sequential``: in process, one shard after another. ``processes``: a pool of spawned
worker processes on this machine. ``jax``: every shard in one compiled program, vmapped
and spread over the JAX devices. ``auto`` picks one from the machine and the workload.
"""

from __future__ import annotations

import inspect
from typing import Any

from shardmc.backends.base import Backend, BackendCapabilities
from shardmc.backends.processes import ProcessesBackend
from shardmc.backends.resources import (
    Workload,
    estimate_memory,
    estimate_shard_seconds,
    physical_cores,
    preflight,
    should_use_pool,
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


def choose_backend(workload: Workload | None) -> str:
    """The ``auto`` choice: ``jax`` when JAX has an accelerator (all shards in one
    program); on CPU ``processes`` when a pool pays off (:func:`should_use_pool`), else
    ``sequential``. (On CPU the vmapped program runs chains in lockstep and was 2-3x
    slower than ``sequential`` in ``benchmarks/backends.py``, so CPU never gets ``jax``.)"""
    import jax

    if jax.default_backend() != "cpu":
        return "jax"
    if workload is None:
        return "sequential"
    workers = min(physical_cores(), workload.num_shards)
    if should_use_pool(workload.num_shards, workers, estimate_shard_seconds(workload)):
        return "processes"
    return "sequential"


def _accepted(factory: Any, options: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    return {k: v for k, v in options.items() if k in params}


def select_backend(name: str | Backend = "auto", *, workload: Workload | None = None,
                   **options: Any) -> Backend:
    """A backend instance by name; an object that already has ``map`` is returned as is
    (duck-typed extension point). ``auto`` uses ``workload`` (see :func:`choose_backend`)
    and drops options the chosen backend does not take."""
    if hasattr(name, "map"):
        return name  # type: ignore[return-value]
    auto = name == "auto"
    if auto:
        name = choose_backend(workload)
    if name not in BACKENDS:
        raise ShardMCInputError(
            f"backend: expected one of {['auto', *sorted(BACKENDS)]}, found {name!r}"
        )
    factory = BACKENDS[name]
    if auto:
        if factory is _jax_backend:  # the lazy factory takes **options: check the class
            from shardmc.backends.jax_devices import JaxBackend

            options = _accepted(JaxBackend, options)
        else:
            options = _accepted(factory, options)
    return factory(**options)


__all__ = ["BACKENDS", "Backend", "BackendCapabilities", "ProcessesBackend",
           "SequentialBackend", "Workload", "choose_backend", "estimate_memory", "preflight",
           "select_backend", "should_use_pool"]
