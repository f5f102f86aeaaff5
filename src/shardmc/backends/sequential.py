"""Run every shard in this process, one after another."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from shardmc.backends.base import BackendCapabilities
from shardmc.backends.resources import Workload, workload_memory
from shardmc.core.progress import STARTED, ShardEvent


class SequentialBackend:
    """In-process, in-order execution; the reference every other backend must match."""

    capabilities = BackendCapabilities(name="sequential", reports_events=True)

    def map(self, fn: Callable[[Any], Any], specs: Iterable[Any], *,
            on_event: Callable[[ShardEvent], None] | None = None) -> Iterator[Any]:
        for pos, spec in enumerate(specs):
            if on_event is not None:
                on_event(ShardEvent(STARTED, getattr(spec, "index", pos)))
            yield fn(spec)

    def validate_resources(self) -> None:
        """Nothing to check: one process, one JAX device."""

    def estimate_memory(self, workload: Workload) -> int:
        """Peak bytes of this process sampling one shard at a time."""
        return workload_memory(workload, processes=1)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> SequentialBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
