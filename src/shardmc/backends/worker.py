"""Worker process of the ``processes`` backend: ``python -m shardmc.backends.worker``.

The driver starts this module as a fresh interpreter (never a fork) with the worker's
environment already in place: ``JAX_ENABLE_X64``, ``JAX_PLATFORMS``, the OpenMP/MKL/
OpenBLAS thread counts, and the driver's own ``XLA_FLAGS``. Bootstrap order matters:

1. read the driver's ``sys.path`` (so user modules import as in the driver);
2. import JAX, switch on float64 and the persistent compilation cache;
3. start the CPU client while the process still sees the driver's CPU set: XLA sizes its
   thread pool from that count when the client starts, and splits large reductions by
   it (a 32 000-element float64 sum differs in the last bit between 1 and 2 visible
   CPUs), so workers and an in-process run add in the same order: bit-identical draws;
4. pin every thread, XLA's pool included, to this worker's cores
   (``os.sched_setaffinity`` per thread) where the OS allows, so workers x threads
   stay within the machine's cores;
5. start the heartbeat thread, report ready, and serve tasks until told to stop.

Messages are pickled tuples over a socket pair inherited as file descriptor ``--fd``.
Driver -> worker: ``("init", dict)``, ``("context", ctx_id, fn, template)``,
``("task", task_id, ctx_id, payload)``, ``("stop",)``. Worker -> driver:
``("ready", dict)``, ``("heartbeat", t)``, ``("started", task_id)``,
``("result", task_id, result, info)``, ``("error", task_id, text, info)``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import os
import resource
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

#: Contexts (per-run shared spec parts) a worker keeps; older ones are dropped.
MAX_CONTEXTS = 4


def _pin_all_threads(cores: list[int]) -> bool:
    """Restrict every thread of this process (and threads started later) to ``cores``."""
    if not cores or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        with contextlib.suppress(OSError):  # a thread that exited meanwhile
            os.sched_setaffinity(tid, cores)
    os.sched_setaffinity(0, cores)
    return True


def _start_jax(cache_dir: str | None, cache_max_bytes: int) -> dict[str, Any]:
    import jax

    jax.config.update("jax_enable_x64", True)
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        if importlib.util.find_spec("filelock") is not None:  # JAX's size cap needs it
            jax.config.update("jax_compilation_cache_max_size", cache_max_bytes)
    devices = jax.devices()  # starts the client (and its thread pool) now
    from shardmc.backends.compile_log import compile_log

    compile_log()
    return {"jax": jax.__version__, "devices": [str(d) for d in devices]}


def _peak_rss_bytes() -> int:
    """Peak resident memory of this process. Linux's VmHWM belongs to the process's own
    address space; ru_maxrss would include the driver's size at the moment of the spawn."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class _Sender:
    """Thread-safe sends; a broken pipe means the driver is gone, so the worker exits."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, msg: tuple) -> None:
        try:
            with self.lock:
                self.conn.send(msg)
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
            os._exit(3)


def _heartbeat(sender: _Sender, interval: float) -> None:
    while True:
        time.sleep(interval)
        sender.send(("heartbeat", time.time()))


def _build_spec(template: Any, payload: dict[str, Any]):
    """The task's spec and the shared-memory mapping it views (None when pickled)."""
    if "spec" in payload:
        return payload["spec"], None
    from shardmc.backends.shm import attach_segment

    shm, arrays = None, payload.get("arrays")
    if arrays is None:
        shm, arrays = attach_segment(payload["segment"])
    data = {k[len("data."):]: v for k, v in arrays.items() if k.startswith("data.")}
    spec = dataclasses.replace(template, data=data, mask=arrays["mask"], **payload["fields"])
    return spec, shm


def _release(shm: Any, pending: list) -> None:
    """Close shared-memory mappings whose views are gone (retried on later tasks)."""
    if shm is not None:
        pending.append(shm)
    for m in list(pending):
        try:
            m.close()
            pending.remove(m)
        except BufferError:
            pass  # a view is still referenced; try again after the next task


def _serve(conn: Connection, sender: _Sender) -> None:
    from shardmc.backends.compile_log import compile_log, diff

    contexts: dict[int, tuple[Any, Any]] = {}
    pending_close: list = []
    log = compile_log()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        if msg[0] == "context":
            contexts[msg[1]] = (msg[2], msg[3])
            while len(contexts) > MAX_CONTEXTS:
                contexts.pop(next(iter(contexts)))
            continue
        _, task_id, ctx_id, payload = msg
        fn, template = contexts[ctx_id]
        sender.send(("started", task_id))
        before, t0, c0 = log.snapshot(), time.perf_counter(), time.process_time()
        shm = None
        try:
            spec, shm = _build_spec(template, payload)
            result = fn(spec)
            del spec
            reply: tuple = ("result", task_id, result)
        except Exception as exc:
            reply = ("error", task_id, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        info = {"elapsed": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                "compile": diff(log.snapshot(), before),
                "compile_total": log.snapshot(), "peak_rss": _peak_rss_bytes()}
        sender.send((*reply, info))
        del reply
        _release(shm, pending_close)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--cores", default="")
    parser.add_argument("--cache-dir", default="")
    parser.add_argument("--cache-max-bytes", type=int, default=-1)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    conn = Connection(args.fd)
    init = conn.recv()[1]
    sys.path[:] = [*init["sys_path"], *(p for p in sys.path if p not in init["sys_path"])]
    info = _start_jax(args.cache_dir or None, args.cache_max_bytes)
    cores = [int(c) for c in args.cores.split(",") if c]
    info.update(pid=os.getpid(), worker=args.worker, pinned=_pin_all_threads(cores),
                cores=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else None, startup_seconds=time.perf_counter() - t0)
    sender = _Sender(conn)
    threading.Thread(target=_heartbeat, args=(sender, args.heartbeat), daemon=True,
                     name="shardmc-heartbeat").start()
    sender.send(("ready", info))
    _serve(conn, sender)


if __name__ == "__main__":
    main()
