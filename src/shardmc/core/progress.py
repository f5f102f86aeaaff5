"""Progress over shards, driven from the driver: one bar (done / running / failed, ETA).

Backends that run shards elsewhere report :class:`ShardEvent` s (a shard started on a
worker, a shard is retried); results mark shards done or failed. Per-shard timing goes
to the ``shardmc.core.progress`` logger at INFO.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Event kinds a backend may report.
STARTED = "started"
RETRY = "retry"


@dataclass(frozen=True)
class ShardEvent:
    """Something happened to shard ``index`` (``worker``: the worker slot, if any)."""

    kind: str
    index: int
    worker: int | None = None
    attempt: int = 1
    message: str = ""


class ShardProgress:
    """Counts and a tqdm bar over ``total`` shards (the bar only when ``enabled``)."""

    def __init__(self, total: int, enabled: bool = False) -> None:
        self.total = total
        self.enabled = enabled
        self.done = 0
        self.failed = 0
        self.retries = 0
        self.running: dict[int, tuple[float, int | None]] = {}  # index -> (start, worker)
        self._bar: Any = None

    def __enter__(self) -> ShardProgress:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=self.total, desc="shards", unit="shard",
                         disable=not self.enabled)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix(running=len(self.running), failed=self.failed,
                                  refresh=False)

    def on_event(self, event: ShardEvent) -> None:
        """A backend's report: a shard started (now running) or is retried."""
        if event.kind == STARTED:
            self.running[event.index] = (time.monotonic(), event.worker)
        elif event.kind == RETRY:
            self.running.pop(event.index, None)
            self.retries += 1
            log.warning("shard %d: retry (attempt %d): %s", event.index, event.attempt,
                        event.message)
        self._refresh()
        if self._bar is not None:
            self._bar.refresh()

    def on_result(self, result: Any) -> None:
        """A shard's final result (ok, divergent or failed)."""
        start, worker = self.running.pop(result.index, (None, None))
        wall = time.monotonic() - start if start is not None else None
        self.done += 1
        if not result.ok:
            self.failed += 1
        stats = result.stats
        log.info("shard %d: %s, sampling %.2f s (warmup %.2f s), wall %s, worker %s, "
                 "attempts %d", result.index, result.status, stats.total_time,
                 stats.warmup_time, "?" if wall is None else f"{wall:.2f} s",
                 "-" if worker is None else worker, stats.attempts)
        self._refresh()
        if self._bar is not None:
            self._bar.update(1)


class PhaseClock:
    """Wall seconds (s) of the named phases of a fit or a run, in the order first seen;
    a phase entered twice adds up. ``with clock.phase("combine"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = round(self.seconds.get(name, 0.0) + elapsed, 3)
