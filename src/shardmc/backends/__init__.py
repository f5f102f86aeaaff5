"""Executors that map ``run_shard`` over shard specs: ``select_backend(name)``."""

from __future__ import annotations

from typing import Any

from shardmc.backends.base import Backend, BackendCapabilities
from shardmc.backends.sequential import SequentialBackend
from shardmc.errors import ShardMCInputError

#: Backend names and their factories. Parallel backends register here as they land.
BACKENDS: dict[str, Any] = {"sequential": SequentialBackend}


def select_backend(name: str | Backend = "auto", **options: Any) -> Backend:
    """A backend instance by name (``auto`` picks the best available); an object that
    already has ``map`` is returned as is (duck-typed extension point)."""
    if hasattr(name, "map"):
        return name  # type: ignore[return-value]
    if name == "auto":
        name = "sequential"
    if name not in BACKENDS:
        raise ShardMCInputError(
            f"backend: expected one of {['auto', *sorted(BACKENDS)]}, found {name!r}"
        )
    return BACKENDS[name](**options)


__all__ = ["BACKENDS", "Backend", "BackendCapabilities", "SequentialBackend", "select_backend"]
