"""Figures of an XPCS fit: c2 data / fit / residual per angle, and a posterior corner plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from shardmc.xpcs.data import XPCSData

#: Resolution of saved figures (dots per inch).
FIGURE_DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_c2_fit(data: XPCSData, fitted: np.ndarray, out_dir: str | Path) -> list[Path]:
    """One PNG per angle: data, model and residual heat maps over (t1, t2) in s."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    paths = []
    extent = (data.t[0], data.t[-1], data.t[0], data.t[-1])
    for i, phi in enumerate(data.phi):
        fig, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
        resid = data.c2[i] - fitted[i]
        lo, hi = np.percentile(data.c2[i], [1, 99])
        r = np.percentile(np.abs(resid), 99)
        for ax, img, title, kw in (
            (axes[0], data.c2[i], "data", {"vmin": lo, "vmax": hi, "cmap": "viridis"}),
            (axes[1], fitted[i], "fit (posterior median)", {"vmin": lo, "vmax": hi,
                                                            "cmap": "viridis"}),
            (axes[2], resid, "residual", {"vmin": -r, "vmax": r, "cmap": "RdBu_r"}),
        ):
            im = ax.imshow(img, origin="lower", extent=extent, **kw)
            ax.set(title=f"{title}, φ = {phi:.1f}°", xlabel="t2 (s)", ylabel="t1 (s)")
            fig.colorbar(im, ax=ax, shrink=0.85)
        path = out_dir / f"c2_angle_{i}.png"
        fig.savefig(path, dpi=FIGURE_DPI)
        plt.close(fig)
        paths.append(path)
    return paths


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
                ax.hist(samples[xj], bins=40, color="C0", histtype="stepfilled", alpha=0.7)
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
