"""Accuracy of a posterior against reference draws (full-data NUTS or an exact answer).

``compare(posterior_or_draws, reference_draws)`` reports, per scalar coordinate, the
standardised mean error (mean - mean_ref) / sd_ref, the SD ratio sd / sd_ref and the
marginal accuracy 1 - 1/2 int |p_hat - p_ref| (Gaussian KDEs on a common grid), and over
all coordinates the largest correlation error, the Mahalanobis distance of the mean error
under the reference covariance and the 2-Wasserstein distance between Gaussian fits (in
reference-sd units).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import gaussian_kde

#: Points of the grid on which the two marginal densities are compared.
GRID_POINTS = 512
#: The grid runs from the 0.05 % to the 99.95 % quantile of both draw sets, padded by this
#: many reference sds (KDE mass outside it is negligible).
GRID_PAD_SD = 1.0
#: At most this many draws (evenly thinned) enter each KDE, to bound its cost.
MAX_KDE_DRAWS = 10_000
#: Default goals (DESIGN: accuracy against full-data NUTS).
MEAN_ERROR_TOL = 0.1
SD_RATIO_BAND = (0.9, 1.1)
MIN_MARGINAL_ACCURACY = 0.95


@dataclass
class Comparison:
    """Accuracy of draws against reference draws, per coordinate and overall."""

    names: list[str]
    std_mean_error: np.ndarray
    sd_ratio: np.ndarray
    marginal_accuracy: np.ndarray
    correlation_error: float
    mahalanobis: float
    gaussian_w2: float

    def worst(self) -> dict[str, float]:
        """The worst value of each metric over coordinates."""
        return {
            "max_abs_std_mean_error": float(np.max(np.abs(self.std_mean_error))),
            "min_sd_ratio": float(np.min(self.sd_ratio)),
            "max_sd_ratio": float(np.max(self.sd_ratio)),
            "min_marginal_accuracy": float(np.min(self.marginal_accuracy)),
            "max_correlation_error": self.correlation_error,
            "mahalanobis": self.mahalanobis,
            "gaussian_w2": self.gaussian_w2,
        }

    def passes(self, mean_tol: float = MEAN_ERROR_TOL,
               sd_band: tuple[float, float] = SD_RATIO_BAND,
               min_accuracy: float = MIN_MARGINAL_ACCURACY) -> bool:
        """True when every coordinate meets the mean, SD and marginal-accuracy goals."""
        w = self.worst()
        return bool(w["max_abs_std_mean_error"] <= mean_tol and w["min_sd_ratio"] >= sd_band[0]
                    and w["max_sd_ratio"] <= sd_band[1]
                    and w["min_marginal_accuracy"] >= min_accuracy)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: worst values plus per-coordinate tables."""
        per = {n: {"std_mean_error": float(e), "sd_ratio": float(r),
                   "marginal_accuracy": float(a)}
               for n, e, r, a in zip(self.names, self.std_mean_error, self.sd_ratio,
                                     self.marginal_accuracy, strict=True)}
        return {**self.worst(), "passes": self.passes(), "per_coordinate": per}


def _flatten_named(values: dict[str, Any], keys: list[str]) -> tuple[np.ndarray, list[str]]:
    cols, names = [], []
    for key in keys:
        v = np.asarray(values[key], dtype=float)
        flat = v.reshape(v.shape[0], -1)
        cols.append(flat)
        names.extend([key] if v.ndim == 1 else
                     [f"{key}[{','.join(map(str, i))}]" for i in np.ndindex(v.shape[1:])])
    return np.concatenate(cols, axis=1), names


def as_matrix(draws: Any, keys: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(S, d) draws and coordinate names from a Posterior, a dict of named draws (S, ...)
    restricted to ``keys``, or an (S, d) / (S,) array."""
    if hasattr(draws, "samples") and isinstance(draws.samples, dict):
        draws = draws.samples
    if isinstance(draws, dict):
        return _flatten_named(draws, sorted(draws) if keys is None else keys)
    x = np.asarray(draws, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"draws: expected (S, d) or (S,), found shape {x.shape}")
    return x, [f"x[{j}]" for j in range(x.shape[1])]


def _thin(x: np.ndarray) -> np.ndarray:
    step = max(1, -(-x.shape[0] // MAX_KDE_DRAWS))
    return x[::step]


def marginal_accuracy(x: np.ndarray, ref: np.ndarray) -> float:
    """1 - 1/2 int |p_x - p_ref| for 1-D draws, with Gaussian KDEs on a common grid."""
    sd = ref.std(ddof=1)
    both = np.concatenate([x, ref])
    lo = np.quantile(both, 0.0005) - GRID_PAD_SD * sd
    hi = np.quantile(both, 0.9995) + GRID_PAD_SD * sd
    grid = np.linspace(lo, hi, GRID_POINTS)
    px = gaussian_kde(_thin(x))(grid)
    pr = gaussian_kde(_thin(ref))(grid)
    return float(1.0 - 0.5 * np.trapezoid(np.abs(px - pr), grid))


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(0.5 * (a + a.T))
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def gaussian_w2(m1: np.ndarray, c1: np.ndarray, m2: np.ndarray, c2: np.ndarray) -> float:
    """2-Wasserstein distance between N(m1, c1) and N(m2, c2)."""
    r2 = _sqrt_psd(c2)
    cross = _sqrt_psd(r2 @ c1 @ r2)
    w2 = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2.0 * cross)
    return float(np.sqrt(max(w2, 0.0)))


def _corr(c: np.ndarray) -> np.ndarray:
    sd = np.sqrt(np.diag(c))
    return c / np.outer(sd, sd)


def compare(draws: Any, reference: Any) -> Comparison:
    """Accuracy of ``draws`` against ``reference``.

    Either may be a Posterior, a dict of named constrained draws (S, ...) or an (S, d)
    array; with dicts only the names present in both are compared. Raises ValueError when
    the two have different coordinates.
    """
    keys = None
    if isinstance(reference, dict) or hasattr(reference, "samples"):
        ref_dict = reference.samples if hasattr(reference, "samples") else reference
        keys = sorted(ref_dict)
        src = draws.samples if hasattr(draws, "samples") else draws
        if isinstance(src, dict):
            keys = sorted(set(keys) & set(src))
            if not keys:
                raise ValueError("compare: draws and reference share no names")
    x, names = as_matrix(draws, keys)
    r, ref_names = as_matrix(reference, keys)
    if x.shape[1] != r.shape[1]:
        raise ValueError(f"compare: draws have {x.shape[1]} coordinates, reference "
                         f"{r.shape[1]}")
    if keys is None:
        names = ref_names
    sd_ref = r.std(axis=0, ddof=1)
    mean_err = (x.mean(axis=0) - r.mean(axis=0)) / sd_ref
    sd_ratio = x.std(axis=0, ddof=1) / sd_ref
    acc = np.array([marginal_accuracy(x[:, j], r[:, j]) for j in range(x.shape[1])])
    cx, cr = np.atleast_2d(np.cov(x.T)), np.atleast_2d(np.cov(r.T))
    corr_err = float(np.max(np.abs(_corr(cx) - _corr(cr)))) if x.shape[1] > 1 else 0.0
    delta = x.mean(axis=0) - r.mean(axis=0)
    maha = float(np.sqrt(delta @ np.linalg.solve(cr, delta)))
    scale = np.outer(sd_ref, sd_ref)
    w2 = gaussian_w2(x.mean(axis=0) / sd_ref, cx / scale, r.mean(axis=0) / sd_ref, cr / scale)
    return Comparison(names, mean_err, sd_ratio, acc, corr_err, maha, w2)
