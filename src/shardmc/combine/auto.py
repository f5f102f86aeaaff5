"""``method="auto"``: pick a combiner from what the shards look like.

Rules, in order:

1. one shard: ``consensus`` (returns its draws unchanged);
2. the shards split into two modes (:func:`shardmc.combine.bimodal.detect_modes`: both
   groups hold >= 15 % of the shards, far apart against their own spread and the shards'
   widths): ``bimodal``;
3. some shard mean is an outlier (robust z-score of the shard means above
   :func:`shardmc.combine.robust.default_threshold`, at least 4, so its robust weight is
   below 1): ``robust_consensus``;
4. otherwise: ``consensus`` (Scott et al. 2016, full covariance), the default.

``hierarchical`` (streamed inputs) and the shape-keeping ``semiparametric`` / ``swiss``
are never picked automatically; :meth:`shardmc.core.posterior.Posterior.diagnose` says when
sub-posteriors are non-Gaussian and points to :func:`shardmc.core.refine.importance_refine`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from shardmc.combine.bimodal import bimodal_combine, detect_modes
from shardmc.combine.consensus import consensus_mc
from shardmc.combine.robust import (
    default_threshold,
    outlier_scores,
    robust_consensus_mc,
    robust_weights,
)


def accepted_options(fn: Callable, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that ``fn`` takes as keyword arguments."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in options.items() if k in params}


def choose_method(draws: np.ndarray) -> tuple[str, str]:
    """(method, reason) for shard draws (K, S, d) following the module's rules."""
    if draws.shape[0] == 1:
        return "consensus", "one shard"
    split = detect_modes(draws)
    if split.bimodal:
        return "bimodal", split.reason
    threshold = default_threshold(draws.shape[0], draws.shape[2])
    weights = robust_weights(outlier_scores(draws), threshold)
    low = np.flatnonzero(weights < 1.0)
    if low.size:
        return "robust_consensus", (f"shard(s) {', '.join(map(str, low[:10]))} have outlying "
                                    f"means (robust z > {threshold:.2f})")
    return "consensus", "one mode, no outlier shards"


#: The combiners ``auto`` chooses from.
AUTO_CHOICES: dict[str, Callable[..., tuple[np.ndarray, dict]]] = {
    "consensus": consensus_mc,
    "bimodal": bimodal_combine,
    "robust_consensus": robust_consensus_mc,
}


def auto_combine(draws: np.ndarray, *, seed: int = 0, **options: Any) -> tuple[np.ndarray, dict]:
    """Combine with the method :func:`choose_method` picks; options it does not take are
    ignored. The choice and the reason are in the metadata (``chosen``, ``reason``)."""
    method, reason = choose_method(draws)
    fn = AUTO_CHOICES[method]
    combined, info = fn(draws, **accepted_options(fn, {**options, "seed": seed}))
    info.pop("chosen", None)
    return combined, {**info, "chosen": method, "reason": reason}
