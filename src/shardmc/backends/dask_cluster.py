"""Shards on a dask.distributed cluster: local processes, PBS/SLURM jobs, or a running one.

``DaskBackend(cluster="local")`` starts a ``LocalCluster`` of single-threaded worker
processes on 127.0.0.1; ``cluster="pbs"``/``"slurm"`` starts a scheduler here and asks
dask-jobqueue for batch jobs that run the workers (:mod:`shardmc.backends.jobqueue`);
``address="tcp://..."`` connects to a running scheduler. The cluster starts on the first
``map`` and lives until :meth:`DaskBackend.close`.

``map`` keeps a window of shards in flight (twice the workers): each shard's
arrays are scattered once to the cluster when it is submitted, the task carries a
reference, and results stream back as they complete, longest shards first. The common
part of the specs (model, model_kwargs, sampler settings) is broadcast once per run. A
shard whose worker dies (or that runs past ``shard_timeout``, whose worker is then
restarted) is resubmitted up to ``max_retries`` times, its data scattered again if it
died with the worker; after that it comes back as a failed ``ShardResult`` saying why.
An error raised by the shard function is never retried by dask: ``run_shard`` has its
own retry ladder, and anything escaping it becomes a failed result with its text.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import queue
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shardmc.backends import lpt
from shardmc.backends.base import BackendCapabilities
from shardmc.backends.dask_worker import EVENT_TOPIC, SLOT_RESOURCE, _failed, run_shard_remote
from shardmc.backends.jobqueue import (
    DaskOptions,
    check_worker_memory,
    job_script,
    make_security,
    start_jobqueue_cluster,
    start_local_cluster,
    validate_options,
)
from shardmc.backends.processes import _is_shard_spec
from shardmc.backends.resources import (
    Workload,
    check_count,
    physical_cores,
    pool_memory,
    usable_cores,
    workload_memory,
)
from shardmc.core.progress import RETRY, STARTED, ShardEvent
from shardmc.errors import ShardMCInputError

log = logging.getLogger(__name__)

#: Shards in flight per worker (one running, one with its data already there).
IN_FLIGHT_PER_WORKER = 2
#: Seconds the driver sleeps when no result is ready; seconds between worker counts.
POLL_SECONDS = 0.01
REFRESH_SECONDS = 0.5
#: Resubmissions of a shard lost while only queued on a dead worker (a bound, not a policy).
MAX_REQUEUES = 10
#: Seconds to wait for a worker to restart after a shard timeout.
RESTART_TIMEOUT = 60.0

_RUN_IDS = itertools.count()


@dataclass(eq=False)
class _Shard:
    index: int
    num_points: int
    fields: dict[str, Any]
    payload: Any  # {"data", "mask"} or a generic spec
    template: int | None  # context id, None: generic spec
    losses: int = 0  # attempts lost after they had started
    requeues: int = 0  # resubmissions of a shard lost before it started
    reasons: list[str] = field(default_factory=list)
    key: str = ""
    data_ref: Any = None
    started: tuple[float, str] | None = None  # (monotonic time, worker address)


def _close_quietly(*things: Any) -> None:
    for thing in things:
        if thing is not None:
            try:
                thing.close()
            except Exception as exc:
                log.debug("closing %r: %s", thing, exc)


class DaskBackend:
    """Run shards on a dask cluster (one thread per worker process).

    cluster: "local" (LocalCluster of ``workers`` processes on 127.0.0.1, default one per
    physical core), "pbs" or "slurm" (``jobs`` batch jobs of ``cores``/``memory``, split
    into ``processes`` workers, through dask-jobqueue; the scheduler listens on
    ``interface``). address: connect to a running scheduler instead (cluster must stay
    "local"; its workers' environment is the user's). security: TLS (True: temporary
    self-signed credentials; {"ca_file", "cert", "key"}: files). max_retries: reruns of a
    shard that lost its worker or data. shard_timeout: wall seconds per attempt (None: no
    limit). See :mod:`shardmc.backends.jobqueue` for the batch options.
    """

    def __init__(self, cluster: str = "local", address: str | None = None,
                 workers: int | None = None, queue: str | None = None,
                 account: str | None = None, walltime: str | None = None, cores: int = 1,
                 memory: str | None = None, processes: int | None = None, jobs: int = 1,
                 job_script_prologue: Iterable[str] = (),
                 job_extra_directives: Iterable[str] = (), adaptive: dict | None = None,
                 interface: str | None = None, local_directory: str | None = None,
                 security: bool | dict = False, max_retries: int = 2,
                 python: str | None = None, shard_timeout: float | None = None) -> None:
        self.options: DaskOptions = validate_options(dict(
            cluster=cluster, address=address, workers=workers, queue=queue, account=account,
            walltime=walltime, cores=cores, memory=memory, processes=processes, jobs=jobs,
            job_script_prologue=job_script_prologue,
            job_extra_directives=job_extra_directives, adaptive=adaptive,
            interface=interface, local_directory=local_directory, security=security,
            max_retries=max_retries, python=python, shard_timeout=shard_timeout))
        self.local = self.options.address is None and not self.options.batch
        self.workers = self.options.workers or physical_cores()
        self.validate_resources()
        parallel = (self.workers if self.local else
                    self.options.jobs * self.options.processes_per_job if self.options.batch
                    else 1)
        self.capabilities = BackendCapabilities(name="dask", parallel_shards=parallel,
                                                multi_process=True, reports_events=True)
        self.cluster: Any = None
        self.client: Any = None
        self.last_run: dict[str, Any] = {}
        self._finalizer: Any = None

    # -- checks ---------------------------------------------------------------------------
    def validate_resources(self) -> None:
        """Refuse more local workers than this process has cores."""
        if self.local:
            check_count(self.workers, "backend.workers", usable_cores(),
                        "the CPU cores usable here")

    def validate_model(self, model: Callable) -> None:
        """Refuse models that cannot be sent to workers. Models from modules travel by
        name (the module must import on the workers); ``__main__`` functions, lambdas
        and closures travel by value (cloudpickle)."""
        import cloudpickle

        try:
            cloudpickle.dumps(model)
        except Exception as exc:
            raise ShardMCInputError(f"model: cannot be pickled for dask workers "
                                    f"({type(exc).__name__}: {exc})") from exc

    def estimate_memory(self, workload: Workload) -> int:
        """Peak bytes on this machine: local workers and their shard copies; for batch
        jobs, refuse workers whose memory share cannot hold one shard."""
        if self.local:
            return pool_memory(workload, min(self.workers, workload.num_shards))
        if self.options.batch:
            check_worker_memory(self.options, workload_memory(workload, processes=1))
        return 0

    # -- cluster --------------------------------------------------------------------------
    def _setup(self) -> dict[str, Any]:
        cores_by_name = None
        if self.local:
            from shardmc.backends.pool import core_sets

            sets = core_sets(self.workers, 1, pin=True)
            cores_by_name = {str(i): c for i, c in enumerate(sets) if c} or None
        return {"compile_cache": True, "cores_by_name": cores_by_name}

    def start(self) -> Any:
        """Start (or connect to) the cluster; returns the ``distributed.Client``."""
        if self.client is not None:
            return self.client
        from distributed import Client

        opts = self.options
        if opts.address is not None:
            self.client = Client(opts.address, security=make_security(opts.security))
        else:
            self.cluster = (start_jobqueue_cluster(opts) if opts.batch
                            else start_local_cluster(opts, self.workers))
            self.client = Client(self.cluster, security=self.cluster.security)
        self._finalizer = weakref.finalize(self, _close_quietly, self.client, self.cluster)
        log.info("dask backend: scheduler %s, dashboard %s",
                 self.client.scheduler.address, self.client.dashboard_link)
        return self.client

    def job_script(self) -> str:
        """The batch job script of this backend's options (see :func:`job_script`)."""
        return job_script(dataclasses.asdict(self.options))

    def close(self) -> None:
        """Close the client and any cluster this backend started (batch jobs cancelled)."""
        if self._finalizer is not None:
            self._finalizer()
        self.client = self.cluster = self._finalizer = None

    def __enter__(self) -> DaskBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running --------------------------------------------------------------------------
    def map(self, fn: Callable[[Any], Any], specs: Iterable[Any], *,
            on_event: Callable[[ShardEvent], None] | None = None) -> Iterator[Any]:
        """Yield ``fn(spec)`` for every spec as the cluster finishes them (any order)."""
        client = self.start()
        run = _Run(self, client, fn, on_event or (lambda e: None))
        run.prepare(specs)
        try:
            yield from run.loop()
        finally:
            run.abandon()
            self.last_run = run.stats


class _Run:
    """One ``map`` call: the queue, the shards in flight and their dask futures."""

    def __init__(self, backend: DaskBackend, client: Any, fn: Callable,
                 emit: Callable[[ShardEvent], None]) -> None:
        self.backend, self.client, self.fn, self.emit = backend, client, fn, emit
        self.opts = backend.options
        self.token = f"{next(_RUN_IDS)}-{uuid.uuid4().hex[:8]}"
        self.setup = backend._setup()
        self.resources = {SLOT_RESOURCE: 1} if self.opts.batch else None
        self.pending: deque[_Shard] = deque()
        self.templates: dict[int, Any] = {}  # context id -> template object
        self.template_refs: dict[int, Any] = {}  # context id -> scattered future
        self.flight: dict[str, tuple[_Shard, Any]] = {}  # key -> (shard, future)
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.workers, self.counted_at = 0, -1e9
        self.t0 = time.perf_counter()
        self.stats: dict[str, Any] = {"run": self.token, "shards": 0, "retries": 0,
                                      "timeouts": 0, "workers": {}}
        from distributed import as_completed

        self.done = as_completed([])
        client.subscribe_topic(EVENT_TOPIC, self.events.put)

    def prepare(self, specs: Iterable[Any]) -> None:
        """Queue every spec (longest first) and keep its arrays until submission."""
        contexts: dict[tuple, int] = {}
        shards, terms = [], []
        for pos, spec in enumerate(specs):
            terms.append(lpt.cost_terms(spec))
            index = spec.index if isinstance(getattr(spec, "index", None), int) else pos
            num_points = int(getattr(spec, "num_points", 0) or 0)
            info: dict[str, Any] = {"index": index, "num_points": num_points}
            if not _is_shard_spec(spec):
                shards.append(_Shard(index, num_points, info, spec, None))
                continue
            ctx_key = (id(spec.model), id(spec.model_kwargs), id(spec.init_values),
                       spec.config, spec.plan, spec.observed_sites, spec.prior_scale,
                       spec.padded)
            if ctx_key not in contexts:
                contexts[ctx_key] = len(contexts)
                self.templates[contexts[ctx_key]] = dataclasses.replace(
                    spec, data={}, mask=np.zeros(0, bool))
            payload = {"data": {k: np.asarray(v) for k, v in spec.data.items()},
                       "mask": np.asarray(spec.mask)}
            fields = {**info, "seed_key": spec.seed_key}
            shards.append(_Shard(index, num_points, fields, payload, contexts[ctx_key]))
        order = lpt.lpt_order(lpt.shard_costs(terms))
        self.pending.extend(shards[i] for i in order)
        self.stats["shards"] = len(shards)

    # -- submitting ---------------------------------------------------------------------
    def _room(self) -> int:
        now = time.monotonic()
        if now - self.counted_at > REFRESH_SECONDS:
            self.workers = len(self.client.nthreads())  # each runs one shard at a time
            self.counted_at = now
        return IN_FLIGHT_PER_WORKER * self.workers - len(self.flight)

    def _template_ref(self, ctx: int | None) -> Any:
        if ctx is None:
            return None
        ref = self.template_refs.get(ctx)
        if ref is None or ref.status != "finished":
            ref = self.client.scatter([self.templates[ctx]], broadcast=True, hash=False)[0]
            self.template_refs[ctx] = ref
        return ref

    def _submit(self, shard: _Shard) -> None:
        if shard.data_ref is None or shard.data_ref.status != "finished":
            shard.data_ref = self.client.scatter([shard.payload], hash=False)[0]
        shard.key = (f"shardmc-{self.token}-shard{shard.index}-"
                     f"try{shard.losses}.{shard.requeues}")
        future = self.client.submit(
            run_shard_remote, self.fn, self._template_ref(shard.template), shard.data_ref,
            shard.fields, self.setup, shard.key, key=shard.key, pure=False,
            resources=self.resources)
        shard.started = None
        self.flight[shard.key] = (shard, future)
        self.done.add(future)

    def _fill(self) -> None:
        if not self.pending:
            return
        room = self._room()
        while self.pending and room > 0:
            self._submit(self.pending.popleft())
            room -= 1

    # -- results ------------------------------------------------------------------------
    def _lost(self, shard: _Shard, reason: str) -> Any:
        """Retry a shard that lost its worker or data, or give up: a failed result. Only
        attempts that had started count against ``max_retries``; a shard that was merely
        queued on a dead worker is requeued (at most MAX_REQUEUES times)."""
        if shard.started is None and shard.requeues < MAX_REQUEUES:
            shard.requeues += 1
            self.pending.appendleft(shard)
            return None
        shard.losses += 1
        shard.reasons.append(reason)
        if shard.losses <= self.opts.max_retries:
            self.stats["retries"] += 1
            self.emit(ShardEvent(RETRY, shard.index, None, shard.losses + 1, reason))
            self.pending.appendleft(shard)
            return None
        return _failed(shard.index, shard.num_points,
                       f"shard {shard.index} failed after {shard.losses} attempt(s) on the "
                       "dask cluster: " + "; ".join(shard.reasons))

    def _finish(self, future: Any) -> Any:
        entry = self.flight.pop(future.key, None)
        if entry is None:
            return None  # abandoned after a timeout
        shard = entry[0]
        if future.status == "finished":
            try:
                result = future.result()
            except Exception as exc:  # finished, then its result died with its worker
                result = self._lost(shard, f"result lost with its worker ({exc})")
        elif future.status == "error":
            exc = future.exception()
            if type(exc).__name__ == "KilledWorker":
                result = self._lost(shard, f"worker lost ({exc})")
            else:
                result = _failed(shard.index, shard.num_points,
                                 f"{type(exc).__name__}: {exc}")
        else:  # cancelled / lost: its data died with a worker
            result = self._lost(shard, f"worker lost with the shard's data ({future.status})")
        future.release()
        if result is not None and shard.data_ref is not None:
            shard.data_ref.release()
            shard.data_ref = None
        return result

    def _drain_events(self) -> None:
        while True:
            try:
                _, msg = self.events.get_nowait()
            except queue.Empty:
                return
            entry = self.flight.get(msg.get("key"))
            if entry is None:
                continue
            shard = entry[0]
            if shard.started is not None:  # dask re-ran it after its worker died
                shard.losses += 1
                shard.reasons.append(f"worker {shard.started[1]} lost")
                self.stats["retries"] += 1
                self.emit(ShardEvent(RETRY, shard.index, None, shard.losses + 1,
                                     "worker lost"))
            shard.started = (time.monotonic(), msg["worker"])
            w = self.stats["workers"].setdefault(msg["worker"], {"pid": msg["pid"],
                                                                 "shards": 0})
            w["shards"] += 1
            self.emit(ShardEvent(STARTED, shard.index))

    def _check_timeouts(self) -> list[Any]:
        limit = self.opts.shard_timeout
        if limit is None:
            return []
        now, out = time.monotonic(), []
        for key, (shard, future) in list(self.flight.items()):
            if shard.started is None or now - shard.started[0] <= limit:
                continue
            worker = shard.started[1]
            self.stats["timeouts"] += 1
            del self.flight[key]
            future.cancel()
            log.warning("shard %d ran past %g s on %s: restarting that worker",
                        shard.index, limit, worker)
            self.client.restart_workers([worker], timeout=RESTART_TIMEOUT,
                                        raise_for_error=False)
            result = self._lost(shard, f"timeout: ran longer than the per-shard timeout of "
                                       f"{limit:g} s on {worker}")
            if result is not None:
                out.append(result)
        return out

    def loop(self) -> Iterator[Any]:
        while self.pending or self.flight:
            self._fill()
            batch = self.done.next_batch(block=False)
            self._drain_events()
            ready = [r for r in map(self._finish, batch) if r is not None]
            ready.extend(self._check_timeouts())
            yield from ready
            if not batch:
                time.sleep(POLL_SECONDS)

    def abandon(self) -> None:
        """After the loop or an early stop: cancel what is still in flight, drop data."""
        futures = [f for _, f in self.flight.values()]
        refs = [s.data_ref for s, _ in self.flight.values() if s.data_ref is not None]
        refs += [r for r in self.template_refs.values()]
        try:
            if futures:
                self.client.cancel(futures)
            for ref in refs:
                ref.release()
            self.client.unsubscribe_topic(EVENT_TOPIC)
        except Exception as exc:  # a client already gone must not hide the real error
            log.warning("dask backend: cleaning up after the run failed: %s", exc)
        self.flight.clear()
        self.pending.clear()
        self.stats["wall_seconds"] = time.perf_counter() - self.t0


__all__ = ["DaskBackend", "job_script"]
