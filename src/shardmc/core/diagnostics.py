"""Per-shard convergence diagnostics with ArviZ: rank-normalised R-hat, bulk/tail ESS, E-BFMI.

Diagnostics are computed on each shard's own chains; R-hat of combined draws means
nothing and is never reported as convergence.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr

from shardmc.core._arviz import az

#: Rank-normalised split R-hat above this flags a shard as not converged.
RHAT_MAX = 1.01
#: E-BFMI below this flags poor energy exploration (Betancourt 2016).
BFMI_MIN = 0.3
#: Bulk/tail ESS below this per shard is flagged.
ESS_MIN = 100


def shard_diagnostics(draws: np.ndarray, energy: np.ndarray, diverging: np.ndarray,
                      tree_depth: np.ndarray, max_tree_depth: int) -> dict[str, np.ndarray]:
    """Diagnostics of K shards at once.

    draws: (K, C, S, d) unconstrained draws; energy, diverging, tree_depth: (K, C, S).
    Returns rhat, ess_bulk, ess_tail (K, d); bfmi (K, C); divergences (K,);
    tree_depth_saturation (K,). R-hat and ESS are rank-based, so the same in constrained
    space for elementwise monotone transforms.
    """
    k, c, _, d = draws.shape
    ds = xr.Dataset({"z": (("shard", "chain", "draw", "param"), draws)})
    ds = ds.transpose("chain", "draw", "shard", "param")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rhat = az.rhat(ds)["z"].values if c > 1 else np.full((k, d), np.nan)
        ess_bulk = az.ess(ds, method="bulk")["z"].values
        ess_tail = az.ess(ds, method="tail")["z"].values
        bfmi = np.stack([az.bfmi(energy[i]) for i in range(k)])
    return {
        "rhat": np.asarray(rhat, dtype=float),
        "ess_bulk": np.asarray(ess_bulk, dtype=float),
        "ess_tail": np.asarray(ess_tail, dtype=float),
        "bfmi": np.asarray(bfmi, dtype=float),
        "divergences": diverging.reshape(k, -1).sum(axis=1).astype(np.int64),
        "tree_depth_saturation": (tree_depth >= max_tree_depth).reshape(k, -1).mean(axis=1),
    }


def result_diagnostics(result: Any, max_tree_depth: int) -> dict[str, np.ndarray]:
    """:func:`shard_diagnostics` of one finished shard (a ``ShardResult``), every array
    with a leading shard axis of length 1. The engine runs it as each shard arrives, so
    a pool's workers go on sampling meanwhile; the values equal the stacked call's."""
    s = result.sample_stats
    return shard_diagnostics(result.draws[None], s["energy"][None], s["diverging"][None],
                             s["tree_depth"][None], max_tree_depth)


def stack_diagnostics(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join per-shard diagnostics (each with a shard axis of 1) in the order given."""
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def shard_warnings(diag: dict[str, np.ndarray], coords: list[str], num_draws: int) -> list[str]:
    """Plain-language problems found in per-shard diagnostics."""
    out = []
    for k in range(diag["divergences"].shape[0]):
        rate = diag["divergences"][k] / num_draws
        if rate > 0.05:
            out.append(f"shard {k}: {rate:.0%} divergent transitions")
        bad = [coords[j] for j in np.flatnonzero(diag["rhat"][k] > RHAT_MAX)]
        if bad:
            out.append(f"shard {k}: R-hat > {RHAT_MAX} for {', '.join(bad[:5])}")
        low = [coords[j] for j in np.flatnonzero(diag["ess_bulk"][k] < ESS_MIN)]
        if low:
            out.append(f"shard {k}: bulk ESS < {ESS_MIN} for {', '.join(low[:5])}")
        if np.nanmin(diag["bfmi"][k]) < BFMI_MIN:
            out.append(f"shard {k}: E-BFMI {np.nanmin(diag['bfmi'][k]):.2f} < {BFMI_MIN}")
        if diag["tree_depth_saturation"][k] > 0.01:
            out.append(f"shard {k}: {diag['tree_depth_saturation'][k]:.0%} of transitions hit "
                       "the maximum tree depth")
    return out
