"""Mode-aware combination: shards that landed in two different modes are combined per mode."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from shardmc.combine.consensus import consensus_mc

#: Fewest shards for which a split into two modes is attempted.
BIMODAL_MIN_SHARDS = 4
#: Smallest share of shards in each mode. A smaller group (2 of 20 shards, say) is a
#: handful of outlier shards, a job for ``robust_consensus``, not a mode.
BIMODAL_MIN_WEIGHT = 0.15
#: Smallest distance between the two groups of shard means, in pooled within-group sds
#: along the line joining them. Splitting one Gaussian cloud into halves gives about 2.7
#: (halves of a normal are 1.6 sd apart with 0.6 sd each), so 4 asks for a real gap.
BIMODAL_MIN_SEPARATION = 4.0
#: Smallest distance between the groups' mean shard means, in within-shard posterior sds:
#: groups closer than a few sub-posterior widths are one mode seen through noise. With
#: BIMODAL_MIN_SEPARATION this keeps false splits of homogeneous shards below ~0.5 % for
#: any K >= 4 and d ~ 10 coordinates (simulated), while modes 6 shard sds apart pass.
BIMODAL_MIN_GAP = 4.0


class ModeSplit(NamedTuple):
    """A 2-group split of shards by their means and whether it counts as two modes."""

    labels: np.ndarray  # (K,) 0 for the larger group, 1 for the other
    bimodal: bool
    weights: tuple[float, float]
    separation: float
    gap: float
    coordinate: int  # the coordinate whose shard means split
    reason: str


def _best_1d_split(p: np.ndarray) -> np.ndarray:
    """Labels of the optimal 2-means split of 1-D values ``p`` (exhaustive over cut points)."""
    order = np.argsort(p, kind="stable")
    x = p[order]
    n = x.size
    c1, c2 = np.cumsum(x), np.cumsum(x**2)
    i = np.arange(1, n)
    left = c2[i - 1] - c1[i - 1] ** 2 / i
    right = (c2[-1] - c2[i - 1]) - (c1[-1] - c1[i - 1]) ** 2 / (n - i)
    cut = int(i[np.argmin(left + right)])
    labels = np.zeros(n, dtype=int)
    labels[order[cut:]] = 1
    return labels


def _split_stats(u: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Best split of 1-D standardised shard means ``u``: (labels, separation, gap)."""
    labels = _best_1d_split(u)
    if (labels == 1).sum() > (labels == 0).sum():
        labels = 1 - labels
    groups = [u[labels == g] for g in (0, 1)]
    gap = float(abs(groups[1].mean() - groups[0].mean()))
    within = np.concatenate([g - g.mean() for g in groups])
    pooled = np.sqrt(np.sum(within**2) / max(u.size - 2, 1))
    return labels, (gap / pooled if pooled > 0 else float("inf")), gap


def detect_modes(draws: np.ndarray) -> ModeSplit:
    """Split shards (K, S, d) into two groups by their means, coordinate by coordinate.

    In each coordinate the shard means are standardised by the median within-shard sd and
    cut by the best 1-D 2-means split. A split counts as two modes when both groups hold
    >= BIMODAL_MIN_WEIGHT of the shards (and two shards) and their means are
    >= BIMODAL_MIN_SEPARATION within-group sds and >= BIMODAL_MIN_GAP shard sds apart; the
    coordinate with the widest such split is used. (A split along a multivariate axis is
    not used: with K <= d shards any two groups are separable, so it finds modes in noise.)
    """
    k, _, d = draws.shape
    if k < BIMODAL_MIN_SHARDS:
        return ModeSplit(np.zeros(k, dtype=int), False, (1.0, 0.0), 0.0, 0.0, 0,
                         f"fewer than {BIMODAL_MIN_SHARDS} shards")
    scale = np.median(draws.std(axis=1, ddof=1), axis=0)
    means = draws.mean(axis=1)
    u = (means - np.median(means, axis=0)) / np.where(scale > 0, scale, 1.0)
    best: ModeSplit | None = None
    for j in range(d):
        labels, separation, gap = _split_stats(u[:, j])
        n1 = int((labels == 1).sum())
        w1 = n1 / k
        checks = [(w1 >= BIMODAL_MIN_WEIGHT and n1 >= 2,
                   f"smaller group holds {w1:.0%} of shards (< {BIMODAL_MIN_WEIGHT:.0%})"),
                  (separation >= BIMODAL_MIN_SEPARATION,
                   f"separation {separation:.1f} < {BIMODAL_MIN_SEPARATION} within-group sds"),
                  (gap >= BIMODAL_MIN_GAP, f"gap {gap:.1f} < {BIMODAL_MIN_GAP} shard sds")]
        failed = [msg for ok, msg in checks if not ok]
        reason = "; ".join(failed) if failed else (
            f"coordinate {j}: groups of {k - n1} and {n1} shards, {separation:.1f} "
            f"within-group sds and {gap:.1f} shard sds apart")
        split = ModeSplit(labels, not failed, (1.0 - w1, w1), separation, gap, j, reason)
        if best is None or (split.bimodal, split.gap) > (best.bimodal, best.gap):
            best = split
    assert best is not None
    return best


def allocate(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total`` in proportion to ``weights`` (largest remainder)."""
    raw = np.asarray(weights, dtype=float) * total
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def bimodal_combine(
    draws: np.ndarray,
    *,
    seed: int = 0,
    rescale: bool = True,
    diagonal: bool = False,
    shrinkage: str | bool = "auto",
    laplace: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Mode-aware consensus: cluster shards by their means, combine each mode separately.

    Shards are split with :func:`detect_modes`. When they fall into two modes, each mode is
    the consensus (Scott et al. 2016) of its K_c shards; with ``rescale`` it is tempered up
    to carry the whole data (covariance x K_c / K: exact when the other shards' likelihoods
    look alike near this mode). The mode weight is the share of shards that found it (the
    mass each shard's sampler assigned to it, if chains land in a mode in proportion to its
    mass). The returned draws are the mixture, shuffled with ``seed``; modes, weights,
    means and covariances are in the metadata. Without two modes this is plain consensus.
    Compare the seeds' ``combine_shard_samples_bimodal``, which split on one parameter,
    redrew independent Gaussians per parameter and weighted nothing.
    """
    k, s, _ = draws.shape
    split = detect_modes(draws)
    base = {"bimodal": split.bimodal, "reason": split.reason,
            "separation": split.separation, "gap": split.gap, "coordinate": split.coordinate}
    if not split.bimodal:
        combined, info = consensus_mc(draws, diagonal=diagonal, shrinkage=shrinkage,
                                      laplace=laplace)
        return combined, {**info, **base, "num_modes": 1}
    counts = allocate(s, np.asarray(split.weights))
    parts, modes = [], []
    for g in (0, 1):
        members = np.flatnonzero(split.labels == g)
        mode, _ = consensus_mc(draws[members], diagonal=diagonal, shrinkage=shrinkage,
                               laplace=None if laplace is None else laplace[members])
        mean = mode.mean(axis=0)
        if rescale:
            mode = mean + (mode - mean) * np.sqrt(members.size / k)
        parts.append(mode[: counts[g]])
        modes.append({"shards": members.tolist(), "weight": split.weights[g],
                      "mean": mean.tolist(), "cov": np.atleast_2d(np.cov(mode.T)).tolist()})
    mixture = np.concatenate(parts)
    mixture = mixture[np.random.default_rng(seed).permutation(mixture.shape[0])]
    return mixture, {**base, "num_modes": 2, "modes": modes, "weights": list(split.weights),
                     "num_shards": k, "rescale": rescale}
