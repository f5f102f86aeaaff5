"""Shards in parallel on one machine: a persistent pool of spawned worker processes.

``ProcessesBackend(workers=2).map(run_shard, specs)`` writes every shard's arrays once
into shared memory, sends each worker the run's common part of the specs once (model,
model_kwargs, sampler settings), and hands out shards longest-first to whichever worker
is idle. Results stream back as they finish. A worker that dies, stops sending
heartbeats or runs past the per-shard timeout is killed and replaced, and its shard is
retried up to ``max_retries`` times; after that the shard comes back as a failed
``ShardResult`` whose ``error`` says why. The pool outlives ``map`` (workers keep their
compiled programs) until :meth:`ProcessesBackend.close`.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import logging
import os
import pickle
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shardmc.backends import lpt, shm
from shardmc.backends.base import BackendCapabilities
from shardmc.backends.cache import CACHE_MAX_BYTES, compile_cache_dir
from shardmc.backends.pool import WorkerHandle, WorkerPool
from shardmc.backends.resources import (
    Workload,
    check_count,
    physical_cores,
    pool_memory,
    usable_cores,
)
from shardmc.core.progress import RETRY, STARTED, ShardEvent
from shardmc.errors import ShardMCInputError

log = logging.getLogger(__name__)

#: Default wall seconds one shard may take on a worker (first shard includes compiling).
DEFAULT_SHARD_TIMEOUT = 3600.0
#: Seconds between a worker's heartbeats, and silence after which it counts as hung.
HEARTBEAT_INTERVAL = 5.0
HEARTBEAT_TIMEOUT = 60.0
#: Seconds a new worker has to import JAX and report ready.
STARTUP_TIMEOUT = 180.0
#: Workers dying before ready, in a row, after which the pool gives up (a broken setup).
MAX_STARTUP_FAILURES = 3
#: Seconds the driver waits for messages before checking timeouts again.
POLL_SECONDS = 0.2
#: Fields that differ between the shards of one run; the rest is sent once per worker.
PER_SHARD_FIELDS = ("index", "seed_key")

_RUN_IDS = itertools.count()  # process-wide, so segment names never collide


@dataclass(eq=False)
class _Task:
    id: int
    index: int
    ctx: int
    payload: dict[str, Any]
    num_points: int
    segment: str | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


def importable(obj: Any, what: str) -> None:
    """Raise ShardMCInputError unless ``obj`` can be imported by name in a fresh process
    (a callable object, e.g. an XPCSModel: its class imports and the object pickles)."""
    if not hasattr(obj, "__qualname__"):
        importable(type(obj), what)
        try:
            pickle.dumps(obj)
        except Exception as exc:  # pickle raises many types (PicklingError, TypeError, ...)
            raise ShardMCInputError(
                f"{what}: a {type(obj).__name__} object cannot be pickled to worker "
                f"processes ({exc})") from exc
        return
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    name = getattr(obj, "__name__", repr(obj))
    if module in (None, "__main__", "__mp_main__"):
        raise ShardMCInputError(
            f"{what}: {name!r} is defined in the __main__ script; spawned worker processes "
            "cannot import it. Move it into a module (e.g. models.py next to your script) "
            "and import it from there, or use backend='sequential'")
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise ShardMCInputError(
            f"{what}: {name!r} is a lambda or a function defined inside another function; "
            "worker processes can only import top-level functions of a module")
    try:
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ShardMCInputError(
            f"{what}: cannot import {module}.{qualname} ({exc}); worker processes import "
            "the model by its module and name") from exc


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"worker killed by signal {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"worker exited (exit code {code})"


def _is_shard_spec(spec: Any) -> bool:
    return dataclasses.is_dataclass(spec) and hasattr(spec, "data") and hasattr(spec, "mask")


def _unlink_all(names: set[str]) -> None:
    """Remove the named segments (those already gone are skipped) and forget them."""
    for name in list(names):
        shm.unlink_segment(name)
        names.discard(name)


def _failed(index: int, num_points: int, error: str) -> Any:
    from shardmc.core.sampling import ShardResult

    return ShardResult(index=index, status="failed", num_points=num_points, error=error)


class ProcessesBackend:
    """Run shards on ``workers`` spawned processes of ``threads_per_worker`` threads each.

    workers: default one per physical core. shard_timeout: wall seconds per shard
    attempt (None: no limit). max_retries: reruns of a shard whose worker died, hung or
    timed out. pin: pin workers to disjoint cores where the OS allows. compile_cache:
    True (per-user folder keyed by host CPU), a folder, or False.
    """

    def __init__(self, workers: int | None = None, *, threads_per_worker: int | None = None,
                 shard_timeout: float | None = DEFAULT_SHARD_TIMEOUT, max_retries: int = 1,
                 heartbeat_interval: float = HEARTBEAT_INTERVAL,
                 heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
                 startup_timeout: float = STARTUP_TIMEOUT, pin: bool = True,
                 compile_cache: bool | str | os.PathLike = True, platform: str = "cpu",
                 env: dict[str, str] | None = None) -> None:
        self.workers = physical_cores() if workers is None else workers
        cores = usable_cores()
        check_count(self.workers, "backend.workers", cores, "the CPU cores usable here")
        self.threads = (max(1, cores // self.workers) if threads_per_worker is None
                        else threads_per_worker)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ShardMCInputError(
                f"backend.max_retries: expected an integer >= 0, found {max_retries!r}")
        self.shard_timeout, self.max_retries = shard_timeout, max_retries
        self.heartbeat_interval, self.heartbeat_timeout = heartbeat_interval, heartbeat_timeout
        self.startup_timeout, self.pin, self.platform, self.env = (
            startup_timeout, pin, platform, env)
        self.compile_cache = compile_cache
        self.capabilities = BackendCapabilities(
            name="processes", parallel_shards=self.workers, multi_process=True,
            reports_events=True)
        self.validate_resources()
        self.last_run: dict[str, Any] = {}
        self._pool: WorkerPool | None = None
        self._ids = itertools.count()

    # -- checks --------------------------------------------------------------------
    def validate_resources(self) -> None:
        """Refuse more workers, or workers x threads, than this process has cores."""
        cores = usable_cores()
        check_count(self.workers, "backend.workers", cores, "the CPU cores usable here")
        check_count(self.threads, "backend.threads_per_worker", max(1, cores // self.workers),
                    f"{cores} cores shared by {self.workers} workers")

    def validate_model(self, model: Callable) -> None:
        """Refuse models that spawned workers cannot import (``__main__``, lambdas, closures)."""
        importable(model, "model")

    def estimate_memory(self, workload: Workload) -> int:
        """Peak bytes of the workers plus the shard segments in shared memory."""
        return pool_memory(workload, min(self.workers, workload.num_shards))

    # -- pool --------------------------------------------------------------------------
    def _get_pool(self) -> WorkerPool:
        if self._pool is None:
            self.validate_resources()
            cache = None
            if self.compile_cache:
                root = None if self.compile_cache is True else self.compile_cache
                cache = str(compile_cache_dir(root))  # type: ignore[arg-type]
            self._pool = WorkerPool(self.workers, self.threads, pin=self.pin, cache_dir=cache,
                                    cache_max_bytes=CACHE_MAX_BYTES,
                                    heartbeat_interval=self.heartbeat_interval,
                                    platform=self.platform, env=self.env)
        return self._pool

    def close(self) -> None:
        """Stop the workers and release their resources (the backend can start again)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> ProcessesBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- preparing tasks ------------------------------------------------------------------
    def _prepare(self, fn: Callable, specs: Iterable[Any], run: int, made: set[str]):
        """The run's tasks in LPT order and its contexts by id. ``made`` receives each
        segment's name before the segment is created; all are removed again if preparing
        fails (or is interrupted) half-way."""
        importable(fn, "backend.map function")
        contexts: dict[tuple, tuple[int, Any]] = {}
        tasks: list[_Task] = []
        terms = []
        room = shm.shm_free_bytes()
        try:
            self._add_tasks(fn, specs, run, contexts, tasks, terms, room, made)
        except BaseException:
            _unlink_all(made)
            raise
        order = lpt.lpt_order(lpt.shard_costs(terms))
        by_id = {cid: body for cid, body in contexts.values()}
        return deque(tasks[i] for i in order), by_id

    def _add_tasks(self, fn: Callable, specs: Iterable[Any], run: int, contexts: dict,
                   tasks: list[_Task], terms: list, room: int | None, made: set[str]) -> None:
        """Write each spec's arrays to shared memory and append its task and cost terms."""
        for pos, spec in enumerate(specs):
            terms.append(lpt.cost_terms(spec))
            index = getattr(spec, "index", pos)
            num_points = int(getattr(spec, "num_points", 0))
            if not _is_shard_spec(spec):
                ctx_key: tuple = ("generic", id(fn))
                payload: dict[str, Any] = {"spec": spec}
                template = None
            else:
                if pos == 0:
                    importable(spec.model, "model")
                ctx_key = (id(fn), id(spec.model), id(spec.model_kwargs), id(spec.init_values),
                           spec.config, spec.plan, spec.observed_sites, spec.prior_scale)
                template = dataclasses.replace(spec, data={}, mask=np.zeros(0, bool))
                arrays = {"mask": np.asarray(spec.mask),
                          **{f"data.{k}": np.asarray(v) for k, v in spec.data.items()}}
                payload = {"fields": {f: getattr(spec, f) for f in PER_SHARD_FIELDS}}
                need = shm.segment_nbytes(arrays)
                if room is not None and need <= shm.SHM_MAX_FRACTION * room:
                    name = f"{shm.NAME_PREFIX}{os.getpid()}_{run}_{pos}"
                    made.add(name)
                    payload["segment"] = shm.write_segment(name, arrays)
                    room -= need
                else:
                    payload["arrays"] = arrays
            if ctx_key not in contexts:
                contexts[ctx_key] = (next(self._ids), (fn, template))
            seg = payload.get("segment")
            tasks.append(_Task(next(self._ids), index, contexts[ctx_key][0], payload, num_points,
                               seg.name if seg is not None else None))

    # -- running --------------------------------------------------------------------------
    def map(self, fn: Callable[[Any], Any], specs: Iterable[Any], *,
            on_event: Callable[[ShardEvent], None] | None = None) -> Iterator[Any]:
        """Yield ``fn(spec)`` for every spec as workers finish them (any order)."""
        run = next(_RUN_IDS)
        pool = self._get_pool()
        t0 = time.perf_counter()
        segments: set[str] = set()  # this run's segments not yet removed
        stats: dict[str, Any] = {"run": run, "shards": 0, "retries": 0,
                                 "workers_replaced": 0, "workers": {}}
        state = None
        try:
            pending, contexts = self._prepare(fn, specs, run, segments)
            stats["shards"] = len(pending)
            state = _RunState(pool, pending, contexts, on_event or (lambda e: None), stats,
                              self, segments)
            yield from state.loop()
        finally:  # done, stopped early, failed or interrupted (KeyboardInterrupt, SIGTERM)
            if state is not None:
                state.abandon()
            _unlink_all(segments)
            stats["wall_seconds"] = time.perf_counter() - t0
            self.last_run = stats


class _RunState:
    """The event loop of one ``map`` call."""

    def __init__(self, pool: WorkerPool, pending: deque, contexts: dict, emit: Callable,
                 stats: dict, cfg: ProcessesBackend, segments: set[str]) -> None:
        self.pool, self.pending, self.contexts, self.emit = pool, pending, contexts, emit
        self.stats, self.cfg = stats, cfg
        self.running: dict[int, _Task] = {}
        self.segments = segments  # shared with map(), which removes any left at the end
        self.finished: list[Any] = []
        self.startup_failures = 0

    def _want(self) -> int:
        return min(self.cfg.workers, len(self.pending) + len(self.running))

    def _dispatch(self) -> None:
        for handle in list(self.pool.handles.values()):
            if not self.pending:
                return
            if not handle.ready or handle.task is not None:
                continue
            task = self.pending.popleft()
            ok = True
            if task.ctx not in handle.contexts:
                ok = self.pool.send(handle, ("context", task.ctx, *self.contexts[task.ctx]))
                handle.contexts.add(task.ctx)
            ok = ok and self.pool.send(handle, ("task", task.id, task.ctx, task.payload))
            handle.task, handle.task_started = task, time.monotonic()
            task.attempts += 1
            self.running[task.id] = task
            if not ok:
                self._lost(handle, "worker connection closed")

    def _record(self, handle: WorkerHandle, info: dict[str, Any]) -> None:
        w = self.stats["workers"].setdefault(handle.pid, {
            "slot": handle.slot, "startup_seconds": handle.info.get("startup_seconds"),
            "cores": handle.info.get("cores"), "shards": 0, "busy_seconds": 0.0,
            "cpu_seconds": 0.0,
            "compiles": {}, "cache_hits": 0, "compile_seconds": 0.0, "peak_rss": 0})
        w["shards"] += 1
        w["busy_seconds"] += info["elapsed"]
        w["cpu_seconds"] += info["cpu"]
        for name, n in info["compile"]["compiles"].items():
            w["compiles"][name] = w["compiles"].get(name, 0) + n
        w["cache_hits"] += info["compile"]["cache_hits"]
        w["compile_seconds"] += info["compile"]["compile_seconds"]
        w["peak_rss"] = max(w["peak_rss"], info["peak_rss"])

    def _complete(self, task: _Task, result: Any) -> None:
        self.running.pop(task.id, None)
        if task.segment:
            shm.unlink_segment(task.segment)
            self.segments.discard(task.segment)
        self.finished.append(result)

    def _handle(self, handle: WorkerHandle, msg: tuple) -> None:
        kind = msg[0]
        if kind == "ready":
            handle.ready, handle.info = True, msg[1]
            self.startup_failures = 0
            log.debug("worker %d ready: %s", handle.slot, msg[1])
        elif kind == "started" and handle.task is not None:
            t = handle.task
            self.emit(ShardEvent(STARTED, t.index, handle.slot, t.attempts))
        elif kind in ("result", "error") and handle.task is not None and handle.task.id == msg[1]:
            task, info = handle.task, msg[-1]
            handle.task = None
            self._record(handle, info)
            result = msg[2] if kind == "result" else _failed(task.index, task.num_points, msg[2])
            self._complete(task, result)

    def _lost(self, handle: WorkerHandle, reason: str | None) -> None:
        """A worker died (reason None) or must be killed: retry or fail its shard; the
        slot is refilled on the next loop."""
        self.pool.remove(handle)
        tail = self.pool.log_tail(handle)
        reason = reason or _exit_reason(handle.proc.returncode)
        if not handle.ready:
            self.startup_failures += 1
            if self.startup_failures >= MAX_STARTUP_FAILURES:
                raise RuntimeError(f"shardmc worker processes fail to start ({reason}); "
                                   f"last worker output:\n{tail}")
        task = handle.task
        handle.task = None
        self.stats["workers_replaced"] += 1
        log.warning("worker %d (pid %d) lost: %s", handle.slot, handle.pid, reason)
        if task is None:
            return
        self.running.pop(task.id, None)
        text = f"{reason} (worker pid {handle.pid}, attempt {task.attempts})"
        if tail:
            text += f"\nworker output:\n{tail}"
        task.errors.append(text)
        if task.attempts <= self.cfg.max_retries:
            self.stats["retries"] += 1
            self.pending.appendleft(task)
            self.emit(ShardEvent(RETRY, task.index, handle.slot, task.attempts + 1, reason))
        else:
            error = (f"shard {task.index} failed after {task.attempts} attempt(s): "
                     + "\n".join(task.errors))
            self._complete(task, _failed(task.index, task.num_points, error))

    def _check_clocks(self) -> None:
        now, cfg = time.monotonic(), self.cfg
        for handle in list(self.pool.handles.values()):
            if not handle.ready:
                if now - handle.spawned > cfg.startup_timeout:
                    self._lost(handle, f"worker not ready after {cfg.startup_timeout:.0f} s")
            elif (handle.task is not None and cfg.shard_timeout is not None
                  and now - handle.task_started > cfg.shard_timeout):
                self._lost(handle, f"timeout: shard {handle.task.index} ran longer than "
                                   f"the per-shard timeout of {cfg.shard_timeout:g} s")
            elif now - handle.last_seen > cfg.heartbeat_timeout:
                self._lost(handle, f"no heartbeat for {cfg.heartbeat_timeout:g} s")

    def loop(self) -> Iterator[Any]:
        while self.pending or self.running or self.finished:
            # Idle workers get their next shard before the caller handles finished ones
            # (persisting, diagnostics): no worker waits on the driver.
            self.pool.fill(self._want())
            self._dispatch()
            while self.finished:
                yield self.finished.pop(0)
            if not (self.pending or self.running):
                break
            messages, dead = self.pool.receive(POLL_SECONDS)
            for handle, msg in messages:
                if handle.alive:
                    self._handle(handle, msg)
            for handle in dead:
                if handle.alive:
                    self._lost(handle, None)
            self._check_clocks()

    def abandon(self) -> None:
        """After the loop (or when the caller stops early): kill workers still busy with
        this run's shards and remove the run's shared-memory segments."""
        for handle in list(self.pool.handles.values()):
            if handle.task is not None:
                self.pool.remove(handle)
        _unlink_all(self.segments)
