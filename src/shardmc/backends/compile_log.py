"""Count XLA compilations in this process through ``jax.monitoring`` listeners.

JAX records one ``backend_compile`` event per executable it builds or loads from the
persistent compilation cache (the event carries the jitted function's name), one
``cache_hits`` event per load from that cache, and the durations of tracing and
lowering. :class:`CompileLog` turns those into counts per function and seconds.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

#: jax.monitoring event names (stable since JAX 0.4.30; see jax/_src/dispatch.py).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"

_lock = threading.Lock()
_installed: CompileLog | None = None


class CompileLog:
    """Running totals: compiles per function name, cache hits, compile seconds."""

    def __init__(self) -> None:
        self.compiles: Counter[str] = Counter()
        self.cache_hits = 0
        self.compile_seconds = 0.0  # tracing + lowering + XLA compile (s)

    def _on_duration(self, event: str, duration: float, **kwargs: Any) -> None:
        if event == BACKEND_COMPILE_EVENT:
            self.compiles[str(kwargs.get("fun_name", "?"))] += 1
            self.compile_seconds += duration
        elif event in (TRACE_EVENT, LOWER_EVENT):
            self.compile_seconds += duration

    def _on_event(self, event: str, **kwargs: Any) -> None:
        if event == CACHE_HIT_EVENT:
            self.cache_hits += 1

    def snapshot(self) -> dict[str, Any]:
        """JSON-able copy of the totals."""
        return {"compiles": dict(self.compiles), "cache_hits": self.cache_hits,
                "compile_seconds": self.compile_seconds}


def compile_log() -> CompileLog:
    """The process-wide :class:`CompileLog`, installed on first call (imports JAX)."""
    global _installed
    with _lock:
        if _installed is None:
            from jax import monitoring

            log = CompileLog()
            monitoring.register_event_duration_secs_listener(log._on_duration)
            monitoring.register_event_listener(log._on_event)
            _installed = log
        return _installed


def diff(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Totals accumulated between two snapshots."""
    names = set(after["compiles"]) | set(before["compiles"])
    counts = {n: after["compiles"].get(n, 0) - before["compiles"].get(n, 0) for n in names}
    return {"compiles": {n: c for n, c in counts.items() if c},
            "cache_hits": after["cache_hits"] - before["cache_hits"],
            "compile_seconds": after["compile_seconds"] - before["compile_seconds"]}
