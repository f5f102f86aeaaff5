"""Split a dict of per-point arrays into K equal-shaped shards (pad + mask).

Every shard has the same number of rows (the largest shard size), so one compiled
program serves every shard. Rows past a shard's real size repeat one of its real
points and carry ``mask == False``; the tempered model masks them out of the
likelihood (see :mod:`shardmc.core.tempering`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from shardmc.errors import ShardMCInputError

#: Sharding strategies understood by :func:`assign_points`.
SHARDING_STRATEGIES: tuple[str, ...] = ("random", "stratified", "contiguous", "interleaved")


class ShardLayout(NamedTuple):
    """Which points go to which shard.

    indices: (K, n_max) int64 row indices into the full data (padded rows repeat a real row).
    mask: (K, n_max) bool, True on real points.
    sizes: (K,) int64, number of real points per shard.
    """

    indices: np.ndarray
    mask: np.ndarray
    sizes: np.ndarray

    @property
    def num_shards(self) -> int:
        return int(self.indices.shape[0])

    @property
    def shard_length(self) -> int:
        return int(self.indices.shape[1])


def _stratified_groups(strata: np.ndarray, num_shards: int, rng: np.random.Generator) -> list:
    """Deal each stratum's (shuffled) points round-robin so every shard gets its share."""
    groups: list[list[np.ndarray]] = [[] for _ in range(num_shards)]
    offset = 0
    for label in np.unique(strata):
        members = np.flatnonzero(strata == label)
        members = members[rng.permutation(members.size)]
        # Rotate the starting shard per stratum so remainders spread evenly.
        for k in range(num_shards):
            groups[(k + offset) % num_shards].append(members[k::num_shards])
        offset += members.size % num_shards
    return [np.sort(np.concatenate(g)) for g in groups]


def _interleaved_groups(num_points: int, num_shards: int, strata: np.ndarray | None) -> list:
    """Snake-deal each stratum's rows in order; the first shard rotates per stratum so that
    remainders spread evenly."""
    labels = np.zeros(num_points, dtype=int) if strata is None else np.asarray(strata)
    shard = np.empty(num_points, dtype=np.int64)
    offset = 0
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        sweep, position = np.divmod(np.arange(members.size), num_shards)
        snake = np.where(sweep % 2 == 0, position, num_shards - 1 - position)
        shard[members] = (snake + offset) % num_shards
        offset += members.size % num_shards
    return [np.flatnonzero(shard == k) for k in range(num_shards)]


def assign_points(
    num_points: int,
    num_shards: int,
    strategy: str = "random",
    *,
    seed: int = 0,
    strata: np.ndarray | None = None,
) -> ShardLayout:
    """Assign ``num_points`` rows to ``num_shards`` shards of one padded shape.

    ``random`` shuffles with ``seed``; ``stratified`` gives every shard its proportional
    share of every label in ``strata`` (shuffled with ``seed``); ``contiguous`` cuts the
    rows in order into near-equal blocks; ``interleaved`` deals the rows of each label of
    ``strata`` (all rows when None) in order, every K-th row to a shard, reversing
    direction on each pass (0..K−1, K−1..0, ...), so that rows whose size drifts along the
    order (XPCS frame rows, longest first) pair up and balance across shards.
    """
    if strategy not in SHARDING_STRATEGIES:
        raise ShardMCInputError(
            f"sharding: expected one of {SHARDING_STRATEGIES}, found {strategy!r}"
        )
    rng = np.random.default_rng(seed)
    if strategy == "stratified":
        if strata is None:
            raise ShardMCInputError("strata: 'stratified' sharding needs a label array, found None")
        groups = _stratified_groups(np.asarray(strata), num_shards, rng)
    elif strategy == "random":
        groups = [np.sort(g) for g in np.array_split(rng.permutation(num_points), num_shards)]
    elif strategy == "interleaved":
        groups = _interleaved_groups(num_points, num_shards, strata)
    else:
        groups = np.array_split(np.arange(num_points), num_shards)
    sizes = np.array([g.size for g in groups], dtype=np.int64)
    if sizes.min() == 0:
        raise ShardMCInputError(
            f"num_shards: every shard needs at least one point; {num_points} points "
            f"cannot fill {num_shards} shards"
        )
    n_max = int(sizes.max())
    indices = np.empty((num_shards, n_max), dtype=np.int64)
    mask = np.zeros((num_shards, n_max), dtype=bool)
    for k, g in enumerate(groups):
        indices[k, : g.size] = g
        indices[k, g.size :] = g[0]
        mask[k, : g.size] = True
    return ShardLayout(indices=indices, mask=mask, sizes=sizes)


def shard_arrays(data: dict[str, np.ndarray], layout: ShardLayout, k: int) -> dict[str, np.ndarray]:
    """Shard ``k``'s rows of every per-point array (one gather, padded to ``n_max``)."""
    rows = layout.indices[k]
    return {name: np.ascontiguousarray(np.asarray(arr)[rows]) for name, arr in data.items()}
