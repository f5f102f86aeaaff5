"""The backend protocol: anything with ``map(fn, specs)`` that yields results as they finish."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class BackendCapabilities:
    """What a backend can do.

    parallel_shards: shards that can run at the same time (1 = one after another).
    multi_process: shards run in other processes (the model must be picklable).
    multi_device: shards are spread over several JAX devices.
    reports_events: ``map`` takes ``on_event=`` and reports shards started and retried
    (:class:`shardmc.core.progress.ShardEvent`), for the driver's progress bar.
    """

    name: str
    parallel_shards: int = 1
    multi_process: bool = False
    multi_device: bool = False
    reports_events: bool = False


@runtime_checkable
class Backend(Protocol):
    """Executor of per-shard work. ``map`` yields ``fn(spec)`` for every spec, in any order.

    Optional methods the engine calls before sampling when present:
    ``validate_resources()``, ``validate_model(model)``, ``estimate_memory(workload)``
    (see :mod:`shardmc.backends.resources`).
    """

    capabilities: BackendCapabilities

    def map(self, fn: Callable[[Any], Any], specs: Iterable[Any]) -> Iterator[Any]: ...

    def close(self) -> None: ...
