"""Worker side of the ``dask`` backend: the environment, the bootstrap and the task function.

Dask workers run shards with :func:`run_shard_remote`. The environment rules are the
``processes`` backend's (:mod:`shardmc.backends.worker`): float64, CPU platform and one
thread for OpenMP/MKL/OpenBLAS, in the worker's environment before JAX is imported
(``LocalCluster(env=...)`` for local workers, ``export`` lines in the job script's
prologue for PBS/SLURM jobs). The first task in each worker process then switches on
float64 and the persistent compilation cache, starts JAX's CPU client while the process
still sees its whole CPU set (same reduction order as the driver, hence bit-identical
draws) and, where the driver assigned cores to the worker's name, pins every thread to
them. Nothing here runs at import time.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from shardmc.backends.pool import THREAD_ENV_VARS

log = logging.getLogger(__name__)

#: Event topic on which workers report that a shard started (driver: progress, timeouts).
EVENT_TOPIC = "shardmc-shard"
#: Worker resource that admits one shard at a time (PBS/SLURM workers with > 1 thread).
SLOT_RESOURCE = "shardmc_slot"
#: Seconds a worker waits for the scheduler to acknowledge a shard's start report.
REPORT_TIMEOUT = 10.0

_BOOT: dict[str, Any] = {}  # this process's bootstrap facts, filled once


def worker_env(threads: int = 1, platform: str = "cpu") -> dict[str, str]:
    """Variables a worker process needs before it imports JAX (the rest of its
    environment is inherited; ``XLA_FLAGS`` stays the driver's, see
    :func:`shardmc.backends.pool.worker_environment`)."""
    env = {"JAX_ENABLE_X64": "1", "JAX_PLATFORMS": platform, "PYTHONUNBUFFERED": "1"}
    env.update({name: str(threads) for name in THREAD_ENV_VARS})
    return env


def env_exports(threads: int = 1) -> list[str]:
    """:func:`worker_env` as ``export`` lines for a batch job script."""
    return [f"export {k}={v}" for k, v in worker_env(threads).items()]


def _cores_for_this_worker(cores_by_name: Mapping[str, list[int]] | None) -> list[int]:
    if not cores_by_name:
        return []
    try:
        from distributed import get_worker

        return list(cores_by_name.get(str(get_worker().name), []))
    except (ImportError, ValueError):  # not inside a dask worker
        return []


def bootstrap(setup: Mapping[str, Any]) -> dict[str, Any]:
    """Once per process: float64, compile cache, JAX client, pinning. ``setup``:
    ``compile_cache`` (bool), ``cores_by_name`` ({worker name: cores} or None)."""
    if _BOOT:
        return _BOOT
    from shardmc.backends.cache import CACHE_MAX_BYTES, compile_cache_dir
    from shardmc.backends.worker import _pin_all_threads, _start_jax

    cache = None
    if setup.get("compile_cache", True):
        try:
            cache = str(compile_cache_dir())  # this host's key: compute nodes differ
        except OSError as exc:
            log.warning("compile cache disabled on this worker: %s", exc)
    info = _start_jax(cache, CACHE_MAX_BYTES)
    info.update(pid=os.getpid(), cache=cache,
                pinned=_pin_all_threads(_cores_for_this_worker(setup.get("cores_by_name"))))
    _BOOT.update(info)
    return _BOOT


def _report_start(index: int, key: str) -> None:
    """Tell the driver this shard started, and wait (at most REPORT_TIMEOUT s) until the
    scheduler has the message: a worker killed right after starting must not take the
    report with it, or the driver would not count the rerun as a retry."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    msg = {"index": index, "key": key, "worker": worker.address, "pid": os.getpid()}
    try:
        from distributed.utils import sync

        sync(worker.loop, worker.scheduler.log_event, topic=EVENT_TOPIC, msg=msg,
             callback_timeout=REPORT_TIMEOUT)
    except Exception as exc:  # an old scheduler, a slow link: the batched stream
        log.debug("synchronous start report failed (%s); sending it batched", exc)
        worker.log_event(EVENT_TOPIC, msg)


def _failed(index: int, num_points: int, error: str) -> Any:
    from shardmc.core.sampling import ShardResult

    return ShardResult(index=index, status="failed", num_points=num_points, error=error)


def run_shard_remote(fn: Callable[[Any], Any], template: Any, payload: Any,
                     fields: Mapping[str, Any], setup: Mapping[str, Any], key: str) -> Any:
    """The dask task: rebuild the spec (``template`` with the shard's scattered arrays
    ``payload = {"data", "mask"}`` and per-shard ``fields``) and return ``fn(spec)``.
    ``template`` None: ``payload`` is the spec itself. An exception becomes a failed
    ``ShardResult`` carrying its text, so dask never retries a model error."""
    index, num_points = fields.get("index", -1), fields.get("num_points", 0)
    try:
        bootstrap(setup)
        _report_start(index, key)
        if template is None:
            return fn(payload)
        per_shard = {k: v for k, v in fields.items() if k != "num_points"}
        spec = dataclasses.replace(template, data=payload["data"], mask=payload["mask"],
                                   **per_shard)
        return fn(spec)
    except Exception as exc:
        return _failed(index, num_points, f"{type(exc).__name__}: {exc}\n"
                                          f"{traceback.format_exc()}")
