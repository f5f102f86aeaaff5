"""A pool of spawned worker processes (``python -m shardmc.backends.worker``).

:class:`WorkerPool` starts, watches, kills and replaces workers and moves messages; it
knows nothing about shards (scheduling lives in :mod:`shardmc.backends.processes`).
Workers are fresh interpreters started with ``subprocess`` (fork + exec, like
multiprocessing's ``spawn``), each with its own environment: the driver's environment
is never modified. Each worker gets one end of a socket pair; its death shows up as
end-of-file on the driver's end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Thread-count variables of the numerical libraries a worker may load.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
#: Characters of a worker's log kept in error messages.
LOG_TAIL_CHARS = 2000
#: Seconds a worker gets to exit after "stop" before it is killed.
STOP_GRACE_SECONDS = 2.0


def worker_environment(threads: int, platform: str = "cpu",
                       extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker process: the driver's plus float64, the JAX platform
    and the thread counts of OpenMP, MKL and OpenBLAS. The driver's own ``os.environ``
    is not touched.

    ``XLA_FLAGS`` stay the driver's, on purpose: XLA's CPU code adds in an order that
    depends on its threading flags (``--xla_cpu_multi_thread_eigen=false`` changed the
    Hessian-initialised mass matrix by 2e-9 and so every draw), and draws must not depend
    on the backend. XLA's thread pool is confined to the worker's cores by pinning instead
    (see :mod:`shardmc.backends.worker`)."""
    env = dict(os.environ)
    env["JAX_ENABLE_X64"] = "1"
    env["JAX_PLATFORMS"] = platform
    env["PYTHONUNBUFFERED"] = "1"
    for name in THREAD_ENV_VARS:
        env[name] = str(threads)
    env.update(extra or {})
    return env


def core_sets(n_workers: int, threads: int, pin: bool) -> list[list[int]]:
    """Disjoint cores for each worker slot, or empty lists when pinning is off or the
    cores do not go round."""
    if not pin or not hasattr(os, "sched_getaffinity"):
        return [[] for _ in range(n_workers)]
    cores = sorted(os.sched_getaffinity(0))
    if n_workers * threads > len(cores):
        return [[] for _ in range(n_workers)]
    return [cores[i * threads:(i + 1) * threads] for i in range(n_workers)]


@dataclass(eq=False)
class WorkerHandle:
    """The driver's view of one worker process."""

    slot: int
    proc: subprocess.Popen
    conn: Connection
    log_path: Path
    spawned: float  # time.monotonic() at start
    last_seen: float
    ready: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    task: Any = None  # the driver's task in flight, or None
    task_started: float = 0.0
    contexts: set[int] = field(default_factory=set)
    alive: bool = True

    @property
    def pid(self) -> int:
        return self.proc.pid


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process stuck in the kernel
        log.warning("worker pid %d did not exit after SIGKILL", proc.pid)


def _shutdown(procs: dict, tmpdir: str) -> None:
    for proc in list(procs.values()):
        _kill(proc)
    procs.clear()
    shutil.rmtree(tmpdir, ignore_errors=True)


class WorkerPool:
    """Up to ``size`` worker processes, one per slot; a dead slot can be refilled."""

    def __init__(self, size: int, threads: int, *, pin: bool, cache_dir: str | None,
                 cache_max_bytes: int, heartbeat_interval: float, platform: str = "cpu",
                 env: dict[str, str] | None = None) -> None:
        self.size = size
        self.cores = core_sets(size, threads, pin)
        self.env = worker_environment(threads, platform, env)
        self.cache_dir = cache_dir
        self.cache_max_bytes = cache_max_bytes
        self.heartbeat_interval = heartbeat_interval
        self.handles: dict[int, WorkerHandle] = {}
        self.spawned_total = 0
        self._tmpdir = tempfile.mkdtemp(prefix="shardmc-workers-")
        self._procs: dict[int, subprocess.Popen] = {}
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._tmpdir)

    def spawn(self, slot: int) -> WorkerHandle:
        """Start a worker in ``slot`` (which must be empty)."""
        parent, child = Pipe(duplex=True)
        log_path = Path(self._tmpdir) / f"worker{slot}-{self.spawned_total}.log"
        cmd = [sys.executable, "-m", "shardmc.backends.worker", "--fd", str(child.fileno()),
               "--worker", str(slot), "--cores", ",".join(map(str, self.cores[slot])),
               "--cache-dir", self.cache_dir or "", "--cache-max-bytes",
               str(self.cache_max_bytes), "--heartbeat", str(self.heartbeat_interval)]
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(cmd, env=self.env, pass_fds=(child.fileno(),),
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        child.close()
        sys_path = [p or os.getcwd() for p in sys.path]
        parent.send(("init", {"sys_path": sys_path}))
        now = time.monotonic()
        handle = WorkerHandle(slot, proc, parent, log_path, now, now)
        self.handles[slot] = handle
        self._procs[slot] = proc
        self.spawned_total += 1
        log.debug("worker %d: started pid %d on cores %s", slot, proc.pid, self.cores[slot])
        return handle

    def fill(self, n: int) -> None:
        """Make sure slots 0..n-1 (n <= size) each hold a live worker."""
        for slot in range(min(n, self.size)):
            if slot not in self.handles:
                self.spawn(slot)

    def send(self, handle: WorkerHandle, msg: tuple) -> bool:
        """Send a message; False if the worker is gone."""
        try:
            handle.conn.send(msg)
            return True
        except (BrokenPipeError, ConnectionResetError, OSError):
            return False

    def receive(self, timeout: float) -> tuple[list[tuple[WorkerHandle, tuple]],
                                               list[WorkerHandle]]:
        """Messages that arrived within ``timeout`` s, and workers found dead."""
        conns = {h.conn: h for h in self.handles.values()}
        messages, dead = [], []
        for conn in wait(list(conns), timeout=timeout) if conns else []:
            handle = conns[conn]  # type: ignore[index]
            try:
                while handle.conn.poll():
                    messages.append((handle, handle.conn.recv()))
                    handle.last_seen = time.monotonic()
            except (EOFError, OSError):
                dead.append(handle)
        dead.extend(h for h in self.handles.values()
                    if h not in dead and h.proc.poll() is not None)
        return messages, dead

    def remove(self, handle: WorkerHandle) -> None:
        """Kill (if still running) and forget a worker; its slot becomes empty."""
        _kill(handle.proc)
        handle.conn.close()
        handle.alive = False
        if self.handles.get(handle.slot) is handle:
            del self.handles[handle.slot]
            self._procs.pop(handle.slot, None)

    def log_tail(self, handle: WorkerHandle) -> str:
        """The last lines a worker wrote to stdout/stderr."""
        try:
            text = handle.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-LOG_TAIL_CHARS:].strip()

    def close(self) -> None:
        """Ask workers to stop, kill those that do not, delete the log folder."""
        for handle in list(self.handles.values()):
            self.send(handle, ("stop",))
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for handle in list(self.handles.values()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                handle.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            self.remove(handle)
        self._finalizer()
