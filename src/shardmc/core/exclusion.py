"""What happens to shards that fail or diverge after their retries (DESIGN invariant 5).

``on_shard_failure="fail"`` (default): the run fails, naming each shard and its cause.
``on_shard_failure="exclude"``: the failed shards are excluded and the K' survivors are
re-run with the prior re-tempered to prior^(1/K'), so the survivors' tempered targets
multiply back exactly to prior x likelihood(survivors' data); the exclusions are
recorded in the provenance. Re-running is exact and cheap to get right: the prior scale
is a traced argument of the compiled shard program, so nothing recompiles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shardmc.core.sampling import DIVERGENCE_RATE_CRITICAL, ShardResult
from shardmc.errors import Remedy, ShardFailedError, ShardMCInputError

log = logging.getLogger(__name__)

SHARD_FAILURE_POLICIES = ("fail", "exclude")
#: With "exclude", the run still fails when more than this fraction of the shards are
#: excluded: the survivors' data would be too unlike the whole to call it the same fit.
MAX_EXCLUDED_FRACTION = 0.5


#: Early abort (the reference stops when more than half of its first 10 shards fail): the
#: run stops once at least EARLY_ABORT_MIN_FAILED of the first EARLY_ABORT_WINDOW shards to
#: finish failed hard, and they are more than EARLY_ABORT_FRACTION of those finished.
EARLY_ABORT_WINDOW = 10
EARLY_ABORT_MIN_FAILED = 2
EARLY_ABORT_FRACTION = 0.5
#: The remedy a failed run names: exclude the failed shards and re-temper the prior.
EXCLUDE_REMEDY: Remedy = ("on_shard_failure", "exclude",
                          "recombines from the surviving shards, prior re-tempered")
#: The remedy an early abort also names: sample every shard before failing.
NO_ABORT_REMEDY: Remedy = ("early_abort", False, "samples every shard before failing")


def validate_policy(policy: Any) -> str:
    if policy not in SHARD_FAILURE_POLICIES:
        raise ShardMCInputError(
            f"on_shard_failure: expected one of {SHARD_FAILURE_POLICIES}, found {policy!r}")
    return policy


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def failure_lines(bad: list[ShardResult], limit: int = 10) -> str:
    """One line per failed shard (up to ``limit``): index, status and cause."""
    return "\n  ".join(f"shard {r.index}: {r.status}: {_first_line(r.error)}"
                       for r in bad[:limit])


def hard_failure(result: ShardResult) -> bool:
    """Failed (an error, non-finite draws) or divergent at DIVERGENCE_RATE_CRITICAL or
    more after its retries: a shard no setting of this run will rescue."""
    return result.status == "failed" or (
        result.status == "divergent"
        and result.stats.divergence_rate >= DIVERGENCE_RATE_CRITICAL)


class EarlyAbort:
    """Watches shards as they finish; :meth:`observe` raises ShardFailedError once most of
    the first ones failed hard (see EARLY_ABORT_WINDOW), naming them and the shards not
    run. For ``on_shard_failure="fail"`` only: with "exclude" the others are needed."""

    def __init__(self, num_shards: int) -> None:
        self.num_shards = num_shards
        self.finished: list[ShardResult] = []

    def observe(self, result: ShardResult) -> None:
        if len(self.finished) >= EARLY_ABORT_WINDOW:
            return
        self.finished.append(result)
        bad = [r for r in self.finished if hard_failure(r)]
        if len(bad) < EARLY_ABORT_MIN_FAILED or \
                len(bad) <= EARLY_ABORT_FRACTION * len(self.finished):
            return
        left = self.num_shards - len(self.finished)
        if left <= 0:
            return  # every shard is in: the run fails with the full list
        log.warning("early abort: %d of the first %d shards failed", len(bad),
                    len(self.finished))
        raise ShardFailedError(
            f"early abort: {len(bad)} of the first {len(self.finished)} shards to finish "
            f"failed or diverged at {DIVERGENCE_RATE_CRITICAL:.0%} or more after their "
            f"retries; the other {left} shard(s) were not sampled:\n  " + failure_lines(bad),
            remedies=[EXCLUDE_REMEDY, NO_ABORT_REMEDY])


def exclusion_record(result: ShardResult) -> dict[str, Any]:
    """JSON-able record of an excluded shard: index, status, cause, divergence rate."""
    return {"index": int(result.index), "status": result.status,
            "error": _first_line(result.error),
            "divergence_rate": float(result.stats.divergence_rate),
            "attempts": int(result.stats.attempts), "num_points": int(result.num_points)}


def apply_failure_policy(
    results: list[ShardResult],
    policy: str,
    rerun: Callable[[list[int], float], list[ShardResult]],
) -> tuple[list[ShardResult], list[dict[str, Any]]]:
    """(results to combine, exclusion records) under ``policy``.

    "fail" returns the results unchanged (the caller raises on failures). "exclude" drops
    the failed shards and calls ``rerun(survivor indices, 1 / K')`` until every result is
    ok; raises ShardFailedError when no shard survives or more than MAX_EXCLUDED_FRACTION
    of them are excluded.
    """
    if policy == "fail" or all(r.ok for r in results):
        return results, []
    total = len(results)
    excluded: list[dict[str, Any]] = []
    current = results
    while True:
        bad = [r for r in current if not r.ok]
        if not bad:
            return current, excluded
        excluded += [exclusion_record(r) for r in bad]
        survivors = sorted(r.index for r in current if r.ok)
        if not survivors or len(excluded) > MAX_EXCLUDED_FRACTION * total:
            causes = "\n  ".join(f"shard {e['index']}: {e['status']}: {e['error']}"
                                 for e in excluded[:10])
            raise ShardFailedError(
                f"{len(excluded)} of {total} shards failed, more than the "
                f"{MAX_EXCLUDED_FRACTION:.0%} that on_shard_failure='exclude' allows:\n  "
                + causes)
        log.warning("excluding shard(s) %s (%s); re-running the %d survivors with the prior "
                    "re-tempered to 1/%d", [e["index"] for e in excluded],
                    ", ".join(sorted({e["status"] for e in excluded})), len(survivors),
                    len(survivors))
        current = rerun(survivors, 1.0 / len(survivors))
