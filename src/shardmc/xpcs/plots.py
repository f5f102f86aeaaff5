"""Figures of a shardmc run: c2 data / fit / residual per angle, a posterior corner plot,
a per-shard forest plot and divergent transitions per shard (PNG, matplotlib Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from shardmc.xpcs.data import XPCSData

#: Resolution of saved figures (dots per inch).
FIGURE_DPI = 110
#: Histogram bins of the corner plot's marginals, and the floating-point steps each bin
#: must span at least (else one bin: draws pinned at a bound hardly vary).
CORNER_BINS, MIN_STEPS_PER_BIN = 40, 4
#: Central interval of the combined posterior drawn as a band in the forest plot.
FOREST_INTERVAL = 0.9
#: Forest plot panels per row, and shard labels shown on its y axis at most.
FOREST_COLUMNS, FOREST_MAX_TICKS = 4, 40
#: Height of one row of forest panels at most (inches), whatever the number of shards.
FOREST_PANEL_MAX_IN = 10.0
#: Divergence bar chart: width per shard and at most (inches), shard labels shown at most.
BAR_WIDTH_IN, BAR_FIGURE_MAX_IN, BAR_MAX_TICKS = 0.35, 14.0, 40


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_c2_arrays(c2: np.ndarray, fitted: np.ndarray, t: np.ndarray, phi: np.ndarray,
                   out_dir: str | Path, residual: np.ndarray | None = None) -> list[Path]:
    """One PNG per angle, ``c2_angle_<i>.png``: data, model and residual heat maps.

    c2, fitted, residual: (n_phi, n_t, n_t), residual defaulting to ``c2 - fitted``;
    t: (n_t,) frame times in s; phi: (n_phi,) angles in degrees.
    """
    plt = _pyplot()
    out_dir = Path(out_dir)
    c2, fitted = np.asarray(c2, float), np.asarray(fitted, float)
    resid_all = c2 - fitted if residual is None else np.asarray(residual, float)
    paths = []
    extent = (t[0], t[-1], t[0], t[-1])
    for i, phi_i in enumerate(np.asarray(phi, float)):
        fig, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
        resid = resid_all[i]
        lo, hi = np.nanpercentile(c2[i], [1, 99])
        r = np.nanpercentile(np.abs(resid), 99) or 1.0
        for ax, img, title, kw in (
            (axes[0], c2[i], "data", {"vmin": lo, "vmax": hi, "cmap": "viridis"}),
            (axes[1], fitted[i], "fit (posterior median)", {"vmin": lo, "vmax": hi,
                                                            "cmap": "viridis"}),
            (axes[2], resid, "residual", {"vmin": -r, "vmax": r, "cmap": "RdBu_r"}),
        ):
            im = ax.imshow(img, origin="lower", extent=extent, **kw)
            ax.set(title=f"{title}, φ = {phi_i:.1f}°", xlabel="t2 (s)", ylabel="t1 (s)")
            fig.colorbar(im, ax=ax, shrink=0.85)
        path = out_dir / f"c2_angle_{i}.png"
        fig.savefig(path, dpi=FIGURE_DPI)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_c2_fit(data: XPCSData, fitted: np.ndarray, out_dir: str | Path) -> list[Path]:
    """One PNG per angle: data, model and residual heat maps over (t1, t2) in s."""
    return plot_c2_arrays(data.c2, fitted, data.t, data.phi, out_dir)


def histogram_bins(x: np.ndarray) -> int:
    """CORNER_BINS, or 1 where the draws span too few floating-point steps for that many
    bins (draws pinned at a bound: matplotlib refuses "too many bins for data range")."""
    x = np.asarray(x, dtype=np.float64)
    span = float(np.ptp(x)) if x.size else 0.0
    step = float(np.spacing(np.max(np.abs(x)))) if x.size else 0.0
    return CORNER_BINS if span > CORNER_BINS * MIN_STEPS_PER_BIN * step else 1


def plot_corner(samples: Mapping[str, np.ndarray], names: Sequence[str], path: str | Path,
                truth: Mapping[str, float] | None = None) -> Path:
    """Pairwise scatter + marginal histograms of scalar ``names``; truth lines if given."""
    plt = _pyplot()
    names = [n for n in names if n in samples and np.ndim(samples[n]) == 1]
    d = len(names)
    fig, axes = plt.subplots(d, d, figsize=(2.1 * d, 2.1 * d), squeeze=False)
    for i, yi in enumerate(names):
        for j, xj in enumerate(names):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            if i == j:
                ax.hist(samples[xj], bins=histogram_bins(samples[xj]), color="C0",
                        histtype="stepfilled", alpha=0.7)
                if truth and xj in truth:
                    ax.axvline(truth[xj], color="C3")
            else:
                ax.scatter(samples[xj], samples[yi], s=1, alpha=0.2, color="C0")
                if truth and xj in truth and yi in truth:
                    ax.plot(truth[xj], truth[yi], "x", color="C3", ms=8)
            ax.tick_params(labelsize=6)
            if i == d - 1:
                ax.set_xlabel(xj, fontsize=8)
            if j == 0 and i > 0:
                ax.set_ylabel(yi, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return Path(path)


def plot_shard_forest(names: Sequence[str], shard_means: np.ndarray,
                      shard_sds: np.ndarray | None, combined: Mapping[str, np.ndarray],
                      path: str | Path, *, labels: Sequence[int] | None = None,
                      truth: Mapping[str, float] | None = None,
                      prob: float = FOREST_INTERVAL) -> Path:
    """A panel per parameter (FOREST_COLUMNS to a row), a row per shard: shard mean ± sd
    (constrained, the parameter's own units) against the combined posterior's mean (line)
    and central ``prob`` interval (band); the truth, if given, as a dashed red line.

    shard_means, shard_sds: (K, len(names)); shard_sds may be None (points only);
    combined: name -> (S,) combined draws; labels: shard indices (default 0..K-1).
    """
    plt = _pyplot()
    means = np.atleast_2d(np.asarray(shard_means, float))
    k, p = means.shape
    labels = list(range(k)) if labels is None else list(labels)
    rows, ncols = np.arange(k), min(p, FOREST_COLUMNS)
    nrows = -(-p // ncols)
    height = nrows * min(0.3 * k + 1.4, FOREST_PANEL_MAX_IN)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols + 0.6, height),
                             squeeze=False, sharey=True, constrained_layout=True)
    for j, ax in enumerate(axes.flat):
        if j >= p:
            ax.axis("off")
            continue
        name = names[j]
        x = np.asarray(combined.get(name, []), float)
        if x.size:
            lo, hi = np.quantile(x, [(1 - prob) / 2, 1 - (1 - prob) / 2])
            ax.axvspan(lo, hi, color="C0", alpha=0.2, label=f"combined {prob:.0%}")
            ax.axvline(x.mean(), color="C0", lw=1.5, label="combined mean")
        if truth and name in truth:
            ax.axvline(truth[name], color="C3", ls="--", lw=1.2, label="truth")
        xerr = None if shard_sds is None else np.asarray(shard_sds, float)[:, j]
        ax.errorbar(means[:, j], rows, xerr=xerr, fmt="o", color="k", ms=4, capsize=2,
                    label="shard mean ± sd")
        ax.set_title(name, fontsize=10)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    step = -(-k // FOREST_MAX_TICKS)
    axes[0, 0].set_yticks(rows[::step], [str(s) for s in labels[::step]])
    axes[0, 0].set_ylim(k - 0.5, -0.5)
    for ax in axes[:, 0]:
        ax.set_ylabel("shard")
    handles, names_ = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names_, loc="outside lower center", ncols=len(handles), fontsize=8)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return Path(path)


def plot_divergences(divergences: Sequence[int], draws_per_shard: int, path: str | Path, *,
                     labels: Sequence[int] | None = None) -> Path:
    """Bar chart of divergent post-warmup transitions per shard, with the 5 %, 10 % and
    30 % rate levels of :mod:`shardmc.core.sampling` (target, high, critical) as lines.

    divergences: (K,) counts; draws_per_shard: chains x draws of each shard.
    """
    from shardmc.core.sampling import (
        DIVERGENCE_RATE_CRITICAL,
        DIVERGENCE_RATE_HIGH,
        DIVERGENCE_RATE_TARGET,
    )

    plt = _pyplot()
    counts = np.asarray(divergences, float)
    k = counts.size
    labels = list(range(k)) if labels is None else list(labels)
    width = min(max(5.0, BAR_WIDTH_IN * k + 2.5), BAR_FIGURE_MAX_IN)
    fig, ax = plt.subplots(figsize=(width, 3.4), constrained_layout=True)
    colors = ["C3" if c > DIVERGENCE_RATE_HIGH * draws_per_shard else "C0" for c in counts]
    ax.bar(np.arange(k), counts, color=colors)
    for rate, name, style in ((DIVERGENCE_RATE_TARGET, "target", ":"),
                              (DIVERGENCE_RATE_HIGH, "high", "--"),
                              (DIVERGENCE_RATE_CRITICAL, "critical", "-")):
        ax.axhline(rate * draws_per_shard, color="C1", ls=style, lw=1,
                   label=f"{rate:.0%} ({name})")
    step = -(-k // BAR_MAX_TICKS)
    ax.set_xticks(np.arange(k)[::step], [str(s) for s in labels[::step]], fontsize=7)
    ax.set(xlabel="shard", ylabel=f"divergent transitions (of {draws_per_shard})",
           title="Divergent transitions per shard")
    ax.set_ylim(0, max(counts.max(initial=0), DIVERGENCE_RATE_CRITICAL * draws_per_shard) * 1.1)
    ax.set_xlim(-0.6, k - 0.4)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return Path(path)
