"""The combined posterior: samples, summary, per-shard diagnostics, ArviZ and NetCDF I/O."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from shardmc.core._arviz import az
from shardmc.core.diagnostics import shard_warnings

#: Sample-stat variables kept per shard draw, as written by :mod:`shardmc.core.sampling`.
SHARD_STAT_NAMES = ("diverging", "accept_prob", "tree_depth", "n_steps", "energy", "lp",
                    "step_size")
#: Extra InferenceData groups (beyond ``posterior``) written by :meth:`Posterior.to_arviz`.
EXTRA_GROUPS = ("unconstrained_posterior", "shard_draws", "shard_sample_stats",
                "shard_diagnostics", "provenance")


@dataclass
class Posterior:
    """A CMC posterior.

    samples: combined constrained draws (S, *shape), latent and deterministic sites.
    unconstrained: combined unconstrained draws (S, d), coordinates named by ``coords``.
    shard_draws: each shard's unconstrained draws (K, C, S_k, d).
    shard_stats: per-draw NUTS statistics (K, C, S_k) by name.
    diagnostics: per-shard diagnostics (see :func:`shardmc.core.diagnostics.shard_diagnostics`).
    provenance: seed, K, shard sizes, sampler settings, combination, versions (JSON-able).
    shard_laplace: each shard's Laplace precision (K, d, d) at its posterior mean (the
    consensus weights' shrinkage target; pass it as ``laplace=`` to recombine), or None.
    """

    samples: dict[str, np.ndarray]
    unconstrained: np.ndarray
    coords: list[str]
    shard_draws: np.ndarray
    shard_stats: dict[str, np.ndarray]
    diagnostics: dict[str, np.ndarray]
    provenance: dict[str, Any] = field(default_factory=dict)
    shard_laplace: np.ndarray | None = None

    @property
    def num_shards(self) -> int:
        return int(self.shard_draws.shape[0])

    @property
    def num_draws(self) -> int:
        return int(self.unconstrained.shape[0])

    def summary(self, prob: float = 0.9) -> pd.DataFrame:
        """Mean, sd and the central ``prob`` interval of every scalar of every site."""
        lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
        rows = {}
        for name, v in self.samples.items():
            flat = np.reshape(v, (v.shape[0], -1))
            labels = [name] if v.ndim == 1 else [
                f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(v.shape[1:])]
            for j, label in enumerate(labels):
                x = flat[:, j]
                rows[label] = {"mean": x.mean(), "sd": x.std(ddof=1),
                               f"q{lo:.1%}": np.quantile(x, lo), "median": np.median(x),
                               f"q{hi:.1%}": np.quantile(x, hi)}
        return pd.DataFrame.from_dict(rows, orient="index")

    def warnings(self) -> list[str]:
        """Problems found in the per-shard diagnostics, in words."""
        draws_per_shard = self.shard_draws.shape[1] * self.shard_draws.shape[2]
        return shard_warnings(self.diagnostics, self.coords, draws_per_shard)

    def diagnose(self, **options: Any) -> Any:
        """Per-shard and cross-shard problems in words a user can act on: divergences,
        R-hat/ESS/E-BFMI, heterogeneity of shard means, non-Gaussian or bimodal
        sub-posteriors, excluded shards, the XPCS time origin where the dt/2 rate floor
        matters (``provenance["xpcs_time"]``). Returns a
        :class:`shardmc.core.diagnosis.DiagnosisReport` (print it); options go to
        :func:`shardmc.core.diagnosis.diagnose`."""
        from shardmc.core.diagnosis import diagnose

        return diagnose(self, **options)

    def to_arviz(self) -> az.InferenceData:
        """InferenceData: ``posterior`` (one pseudo-chain of combined draws) plus shard draws,
        per-shard sample stats and diagnostics and a ``provenance`` group (JSON in attrs)."""
        groups = {
            "posterior": xr.Dataset({n: (("chain", "draw", *[f"{n}_dim_{i}" for i in
                                          range(v.ndim - 1)]), v[None]) for n, v in
                                     self.samples.items()}),
            "unconstrained_posterior": xr.Dataset(
                {"z": (("draw", "param"), self.unconstrained)}, coords={"param": self.coords}),
            "shard_draws": xr.Dataset({"z": (("shard", "chain", "draw", "param"),
                                             self.shard_draws), **self._laplace_vars()},
                                      coords={"param": self.coords}),
            "shard_sample_stats": xr.Dataset(
                {n: (("shard", "chain", "draw"), v) for n, v in self.shard_stats.items()}),
            "shard_diagnostics": xr.Dataset(
                {n: (_diag_dims(n, v), v) for n, v in self.diagnostics.items()},
                coords={"param": self.coords}),
            "provenance": xr.Dataset({"num_shards": ((), self.num_shards)},
                                     attrs={"json": json.dumps(self.provenance)}),
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return az.InferenceData(**groups)

    def _laplace_vars(self) -> dict[str, Any]:
        if self.shard_laplace is None:
            return {}
        return {"laplace_precision": (("shard", "param", "param_col"), self.shard_laplace)}

    @classmethod
    def from_arviz(cls, idata: az.InferenceData) -> Posterior:
        """Rebuild a Posterior from :meth:`to_arviz` output (e.g. after NetCDF I/O)."""
        post = idata.posterior
        samples = {n: np.asarray(post[n].values[0]) for n in post.data_vars}
        unc = idata["unconstrained_posterior"]
        return cls(
            samples=samples,
            unconstrained=np.asarray(unc["z"].values),
            coords=[str(c) for c in unc["param"].values],
            shard_draws=np.asarray(idata["shard_draws"]["z"].values),
            shard_stats={n: np.asarray(v.values)
                         for n, v in idata["shard_sample_stats"].data_vars.items()},
            diagnostics={n: np.asarray(v.values)
                         for n, v in idata["shard_diagnostics"].data_vars.items()},
            provenance=json.loads(idata["provenance"].attrs["json"]),
            shard_laplace=(np.asarray(idata["shard_draws"]["laplace_precision"].values)
                           if "laplace_precision" in idata["shard_draws"] else None),
        )

    def save(self, path: str | Path) -> Path:
        """Write the posterior to a NetCDF file (ArviZ InferenceData)."""
        path = Path(path)
        self.to_arviz().to_netcdf(str(path), engine="h5netcdf")
        return path


def _diag_dims(name: str, v: np.ndarray) -> tuple[str, ...]:
    if v.ndim == 1:
        return ("shard",)
    return ("shard", "chain") if name == "bfmi" else ("shard", "param")


def load(path: str | Path) -> Posterior:
    """Read a posterior written by :meth:`Posterior.save`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no posterior file at {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        idata = az.from_netcdf(str(path), engine="h5netcdf")
    return Posterior.from_arviz(idata)
