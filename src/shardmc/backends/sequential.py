"""Run every shard in this process, one after another."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from shardmc.backends.base import BackendCapabilities


class SequentialBackend:
    """In-process, in-order execution; the reference every other backend must match."""

    capabilities = BackendCapabilities(name="sequential")

    def map(self, fn: Callable[[Any], Any], specs: Iterable[Any]) -> Iterator[Any]:
        for spec in specs:
            yield fn(spec)

    def validate_resources(self) -> None:
        """Nothing to check: one process, one JAX device."""

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> SequentialBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
