"""Shard arrays in POSIX shared memory: written once by the driver, mapped by workers.

One segment per shard holds all of the shard's arrays back to back (each aligned to
:data:`ALIGN` bytes). The driver creates and fills the segment, closes its own mapping
and unlinks the segment once the shard's final result is in. A worker maps the segment
read-only in effect (it never writes) and gets numpy views without a copy.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory

import numpy as np

#: Byte alignment of each array inside a segment (a cache line; XLA likes >= 16).
ALIGN = 64
#: Fraction of the free space on /dev/shm that shard segments may take before the
#: driver falls back to sending arrays through the pipe.
SHM_MAX_FRACTION = 0.5
#: Prefix of segment names, so leftovers are recognisable in /dev/shm.
NAME_PREFIX = "shardmc_"

_TRACK_ARG = "track" in inspect.signature(shared_memory.SharedMemory).parameters


@dataclass(frozen=True)
class ArrayRef:
    """Where one array lies in a segment."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    offset: int


@dataclass(frozen=True)
class SegmentRef:
    """A shard's segment: its name and the arrays in it (picklable, a few hundred bytes)."""

    name: str
    arrays: tuple[ArrayRef, ...]
    nbytes: int


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def segment_nbytes(arrays: dict[str, np.ndarray]) -> int:
    """Bytes a segment needs for ``arrays`` (with alignment padding)."""
    return max(ALIGN, sum(_aligned(np.asarray(a).nbytes) for a in arrays.values()))


def shm_free_bytes() -> int | None:
    """Free bytes on the shared-memory filesystem, or None where it cannot be measured."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def write_segment(name: str, arrays: dict[str, np.ndarray]) -> SegmentRef:
    """Create segment ``name`` holding a copy of ``arrays``; the driver's mapping is closed."""
    refs, offset = [], 0
    shm = shared_memory.SharedMemory(name=name, create=True, size=segment_nbytes(arrays))
    try:
        for key, value in arrays.items():
            arr = np.ascontiguousarray(value)
            view = np.ndarray(arr.shape, arr.dtype, buffer=shm.buf, offset=offset)
            view[...] = arr
            del view
            refs.append(ArrayRef(key, arr.dtype.str, tuple(arr.shape), offset))
            offset += _aligned(arr.nbytes)
        return SegmentRef(shm.name, tuple(refs), shm.size)
    finally:
        shm.close()


def unlink_segment(name: str) -> None:
    """Remove a segment (a no-op if it is already gone)."""
    try:
        shm = shared_memory.SharedMemory(name=name)
    except FileNotFoundError:
        return
    shm.close()
    shm.unlink()


def attach_segment(ref: SegmentRef) -> tuple[shared_memory.SharedMemory, dict[str, np.ndarray]]:
    """Map a segment in a worker; returns the mapping and zero-copy views by key.

    The worker must not register the segment with its own resource tracker (which would
    unlink it when the worker exits, under the driver's feet): Python >= 3.13 takes
    ``track=False``; older versions register and we unregister at once.
    """
    if _TRACK_ARG:
        shm = shared_memory.SharedMemory(name=ref.name, track=False)
    else:
        shm = shared_memory.SharedMemory(name=ref.name)
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    views = {a.key: np.ndarray(a.shape, np.dtype(a.dtype), buffer=shm.buf, offset=a.offset)
             for a in ref.arrays}
    return shm, views
