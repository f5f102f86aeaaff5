"""Count XLA compilations and their time, from JAX's monitoring events (for benchmarks)."""

from __future__ import annotations

import threading
from typing import NamedTuple

#: JAX monitoring event emitted once per XLA backend compilation.
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

_lock = threading.Lock()
_counts = {"n": 0, "seconds": 0.0}
_installed = False


class CompileStats(NamedTuple):
    """Number of XLA compilations and their total duration (s)."""

    count: int
    seconds: float


def _listener(event: str, duration: float, **_: object) -> None:
    if event == BACKEND_COMPILE_EVENT:
        with _lock:
            _counts["n"] += 1
            _counts["seconds"] += duration


def compile_stats() -> CompileStats:
    """Compilations so far in this process (installs the listener on first call)."""
    global _installed
    if not _installed:
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(_listener)
        _installed = True
    with _lock:
        return CompileStats(_counts["n"], _counts["seconds"])
