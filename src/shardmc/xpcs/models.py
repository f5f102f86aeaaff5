"""NumPyro models of XPCS two-time data, as dense frame rows or pooled points.

Contract with the engine: ``model(**model_kwargs, **data)`` where ``data`` is

* under ``likelihood="rows"`` (default), one entry per frame row (angle, t1) holding all of
  its later frames (:mod:`shardmc.xpcs.row_layout`): ``phi_idx``, ``t1_idx``, ``c2``
  (R, C) centred, ``c2_mean``, ``c2_ss`` and, for ``noise="known"``, ``weight``,
  ``weight_sum``, ``log_sigma``. The observed site is a ``numpyro.factor("c2", ...)`` of
  the rows' Gaussian log densities, shape (R,) (:mod:`shardmc.xpcs.row_likelihood`).
  With ``c2=None`` (``numpyro.infer.Predictive``) ``c2`` is drawn on the rows, (R, C);
* under ``likelihood="points"``, per point (length n): ``phi_idx``, ``t1_idx``,
  ``t2_idx`` (int), ``c2`` (float) and, for ``noise="known"``, ``sigma`` (float); the
  observed site is ``numpyro.sample("c2", Normal(mean, sigma), obs=c2)``, batch (n,);
* ``model_kwargs`` (arrays, not per point): ``t`` (n_t,) s, ``dt`` s, ``q`` Å⁻¹, ``gap`` Å,
  ``phi`` (n_phi,) degrees, and for constant scaling modes
  ``contrast_fixed`` / ``offset_fixed`` (n_phi,).

All static choices (physics, per-angle mode, priors, noise, shear convention, data
layout) are fields of the frozen, hashable :class:`XPCSModel`, so it can be a static
``jax.jit`` argument and be pickled to worker processes. Both layouts give the same log
density for the same data (tested to 1e-10, value and gradient).

Parameterisation (``parameterization``):

* ``"rates"`` (default): each power-law block (amplitude with a log prior, exponent,
  offset: J, γ̇, v) is one sample site ``<block>_rates`` of shape (3,) in rate coordinates
  (:mod:`shardmc.xpcs.reparam`), distributed as the table's box prior of the three
  parameters; the parameters are deterministic sites under their physical names.
* ``"physical"``: every parameter is its own site, as below.

Outside blocks, a parameter with a log prior (sigma, or an amplitude under
``"physical"``) is sampled as ``log_<name>`` (its prior is then Uniform or
TruncatedNormal on the log) and exposed as a deterministic site under its physical
name; the others are sampled directly. NumPyro maps each bounded site to the real line
by a logit, so NUTS works in those coordinates (docs/xpcs.md).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from shardmc.backends.resources import MemoryProfile
from shardmc.errors import ShardMCInputError
from shardmc.xpcs.parameters import (
    LOG_PRIOR_KINDS,
    NOISE_PARAM,
    SCALING_PARAMS,
    PriorSpec,
    model_parameter_names,
    resolve_priors,
)
from shardmc.xpcs.physics import (
    SHEAR_CONVENTIONS,
    Geometry,
    PointIndex,
    RowIndex,
    c2_mean,
    gather,
)
from shardmc.xpcs.reparam import BlockBox, RateBlockPrior, reference_time
from shardmc.xpcs.row_layout import (
    KNOWN_NOISE_ROW_KEYS,
    ROW_KEYS,
    padded_columns,
    row_observations,
)
from shardmc.xpcs.row_likelihood import row_log_likelihood, row_sum_squares

PER_ANGLE_MODES = ("individual", "auto", "constant", "constant_averaged")
NOISE_MODES = ("sampled", "known")
#: ``auto`` samples one averaged contrast/offset pair from this many angles on (REFERENCE.md).
AUTO_AVERAGE_MIN_ANGLES = 3
DATA_KEYS = ("phi_idx", "t1_idx", "t2_idx", "c2")
MiB = 1024**2
#: Peak memory of the frame-row likelihood per physics: (bytes per entry of a shard's
#: (R, C) rows for the likelihood's and gradient's temporaries, bytes once per process for
#: compiling and holding its programs). Measured with benchmarks/memory.py, one shard of
#: 3 angles × 300–1 600 frames (benchmarks/results/memory-2cpu.json): static 46 B per entry
#: and 0.5–0.6 GiB, laminar_flow 1.2 kB (its hand-written reverse pass keeps (R, C)
#: buffers) and ~0.6 GiB, two_component no measurable slope and ~1.5 GiB; with margin.
ROW_MEMORY = {"static": (48, 700 * MiB), "laminar_flow": (1280, 700 * MiB),
              "two_component": (48, 1600 * MiB)}
GEOMETRY_KEYS = ("t", "dt", "q", "gap", "phi")
FIXED_SCALING_KEYS = ("contrast_fixed", "offset_fixed")
PARAMETERIZATIONS = ("rates", "physical")
#: Data layouts: dense frame rows (structured kernels, default) or pooled points.
LIKELIHOODS = ("rows", "points")
#: Row kernels: "auto" (structured where the physics factors, else dense) or "dense".
ROW_KERNELS = ("auto", "dense")
#: Power-law blocks r(t) = amplitude t^exponent + offset: site name -> (amplitude, exponent,
#: offset). Sampled in rate coordinates under parameterization="rates".
RATE_BLOCKS = {
    "J_rates": ("D0", "alpha", "D_offset"),
    "gamma_dot_rates": ("gamma_dot_0", "beta", "gamma_dot_offset"),
    "J_ref_rates": ("D0_ref", "alpha_ref", "D_offset_ref"),
    "J_sample_rates": ("D0_sample", "alpha_sample", "D_offset_sample"),
    "v_rates": ("v0", "beta", "v_offset"),
}


@dataclass(frozen=True)
class XPCSModel:
    """A NumPyro model of pooled XPCS points; build it with :meth:`create`.

    physics: "static" | "laminar_flow" | "two_component"; n_angles: number of angles;
    per_angle_mode: "individual" | "auto" | "constant" | "constant_averaged";
    priors: resolved PriorSpec of every site (see :func:`resolve_priors`);
    noise: "sampled" (per-angle sigma) | "known" (per-point ``sigma`` in the data);
    shear_convention: "published" | "reference" (laminar_flow only);
    parameterization: "rates" | "physical" (module docstring);
    likelihood: "rows" | "points", the data layout (module docstring);
    row_kernel: "auto" | "dense" (rows only; :func:`row_sum_squares`).
    """

    physics: str
    n_angles: int
    per_angle_mode: str = "individual"
    priors: tuple[PriorSpec, ...] = ()
    noise: str = "sampled"
    shear_convention: str = "published"
    parameterization: str = "rates"
    likelihood: str = "rows"
    row_kernel: str = "auto"

    def __post_init__(self) -> None:
        names = model_parameter_names(self.physics)
        if not isinstance(self.n_angles, numbers.Integral) or self.n_angles < 1:
            raise ShardMCInputError(f"n_angles: expected an int >= 1, found {self.n_angles!r}")
        object.__setattr__(self, "n_angles", int(self.n_angles))
        if self.per_angle_mode not in PER_ANGLE_MODES:
            raise ShardMCInputError(f"per_angle_mode: expected one of {PER_ANGLE_MODES}, found "
                                    f"{self.per_angle_mode!r}")
        if self.noise not in NOISE_MODES:
            raise ShardMCInputError(f"noise: expected one of {NOISE_MODES}, found {self.noise!r}")
        if self.shear_convention not in SHEAR_CONVENTIONS:
            raise ShardMCInputError(f"shear_convention: expected one of {SHEAR_CONVENTIONS}, "
                                    f"found {self.shear_convention!r}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ShardMCInputError(f"parameterization: expected one of {PARAMETERIZATIONS}, "
                                    f"found {self.parameterization!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ShardMCInputError(f"likelihood: expected one of {LIKELIHOODS}, found "
                                    f"{self.likelihood!r}")
        if self.row_kernel not in ROW_KERNELS:
            raise ShardMCInputError(f"row_kernel: expected one of {ROW_KERNELS}, found "
                                    f"{self.row_kernel!r}")
        if not self.priors:
            object.__setattr__(self, "priors", resolve_priors(self.physics))
        have = {p.name for p in self.priors}
        missing = sorted((set(names) | set(SCALING_PARAMS) | {NOISE_PARAM}) - have)
        if missing:
            raise ShardMCInputError(f"priors: missing prior(s) for {missing}")

    @classmethod
    def create(
        cls,
        physics: str,
        n_angles: int,
        *,
        per_angle_mode: str = "individual",
        priors: Mapping[str, Any] | None = None,
        noise: str = "sampled",
        shear_convention: str = "published",
        parameterization: str = "rates",
        likelihood: str = "rows",
    ) -> XPCSModel:
        """A model with the table's default priors, ``priors`` overriding them by name."""
        return cls(physics, int(n_angles), per_angle_mode, resolve_priors(physics, priors),
                   noise, shear_convention, parameterization, likelihood)

    def with_points(self) -> XPCSModel:
        """The same model over pooled points (``likelihood="points"``)."""
        return replace(self, likelihood="points")

    def observation_counts(self, data: Mapping[str, Any], model_kwargs: Mapping[str, Any]
                           ) -> np.ndarray:
        """Data points carried by each entry of ``data`` along axis 0 (R,) or (n,): the
        engine sizes sampling plans and reports point counts with it."""
        if self.likelihood == "points":
            return np.ones(np.shape(data["c2"])[0], dtype=np.int64)
        return row_observations(data, int(np.shape(model_kwargs["t"])[0]))

    # -- static structure ------------------------------------------------------------------
    def memory_profile(self, data: Mapping[str, Any], model_kwargs: Mapping[str, Any]
                       ) -> MemoryProfile | None:
        """Per-row temporaries and program bytes on frame rows (:data:`ROW_MEMORY`) for
        the engine's memory estimate; None on points (the per-point default)."""
        if self.likelihood != "rows":
            return None
        entry_bytes, program_bytes = ROW_MEMORY[self.physics]
        n_cols = padded_columns(int(np.shape(model_kwargs["t"])[0]))
        return MemoryProfile(row_temp_bytes=entry_bytes * n_cols, program_bytes=program_bytes)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Physical parameter names of the physics model."""
        return model_parameter_names(self.physics)

    @property
    def prior(self) -> dict[str, PriorSpec]:
        return {p.name: p for p in self.priors}

    @property
    def scaling_mode(self) -> str:
        """Resolved per-angle mode: "individual", "averaged" or "constant"."""
        if self.per_angle_mode in ("constant", "constant_averaged"):
            return "constant"
        if self.per_angle_mode == "auto" and self.n_angles >= AUTO_AVERAGE_MIN_ANGLES:
            return "averaged"
        return "individual"

    @property
    def rate_blocks(self) -> dict[str, tuple[str, str, str]]:
        """Blocks sampled in rate coordinates: site -> (amplitude, exponent, offset).

        Under "rates", every block of the physics whose amplitude has a log prior."""
        if self.parameterization != "rates":
            return {}
        names = set(self.parameter_names)
        return {site: block for site, block in RATE_BLOCKS.items()
                if set(block) <= names and self.prior[block[0]].kind in LOG_PRIOR_KINDS}

    def site_name(self, name: str) -> str:
        """Name of the sample site that carries parameter ``name``."""
        for site, block in self.rate_blocks.items():
            if name in block:
                return site
        return f"log_{name}" if self.prior[name].kind in LOG_PRIOR_KINDS else name

    def _global_names(self) -> tuple[str, ...]:
        scaling = SCALING_PARAMS if self.scaling_mode != "constant" else ()
        noise = (NOISE_PARAM,) if self.noise == "sampled" else ()
        return (*self.parameter_names, *scaling, *noise)

    @property
    def sampled_sites(self) -> tuple[str, ...]:
        """Latent sample-site names (sampling order)."""
        return tuple(dict.fromkeys(self.site_name(n) for n in self._global_names()))

    @property
    def site_shapes(self) -> dict[str, tuple[int, ...]]:
        """Latent sample-site name -> shape, in sampling order."""
        blocks = self.rate_blocks
        return {self.site_name(n): (3,) if self.site_name(n) in blocks else self.site_shape(n)
                for n in self._global_names()}

    @property
    def deterministic_sites(self) -> tuple[str, ...]:
        """Deterministic sites: physical values of parameters sampled in other coordinates
        (log, rate blocks), fixed scalings."""
        out = [n for n in self._global_names() if self.site_name(n) != n]
        if self.scaling_mode == "constant":
            out += list(SCALING_PARAMS)
        return tuple(out)

    def site_shape(self, name: str) -> tuple[int, ...]:
        """Shape of parameter ``name``: () or (n_angles,)."""
        if name == NOISE_PARAM or (name in SCALING_PARAMS and self.scaling_mode == "individual"):
            return (self.n_angles,)
        return ()

    def block_prior(self, site: str, t: Any) -> RateBlockPrior:
        """The prior of rate block ``site`` for frame times ``t`` (s)."""
        specs = [self.prior[n] for n in self.rate_blocks[site]]
        box = BlockBox(*(b for spec in specs for b in site_bounds(spec)))
        center = 0.5 * (box.a_lo + box.a_hi)
        scale = float(np.exp(center))
        return RateBlockPrior(tuple(site_distribution(spec) for spec in specs), box,
                              jnp.log(reference_time(t)), (center, 0.0, 0.0),
                              (1.0, scale, scale))

    # -- the model -------------------------------------------------------------------------
    def __call__(
        self,
        *,
        t: Any,
        dt: Any,
        q: Any,
        gap: Any,
        phi: Any,
        phi_idx: Any,
        t1_idx: Any,
        t2_idx: Any = None,
        c2: Any = None,
        sigma: Any = None,
        contrast_fixed: Any = None,
        offset_fixed: Any = None,
        **rows: Any,
    ) -> None:
        physical: dict[str, Any] = {}
        for site in self.rate_blocks:
            physical.update(self._sample_block(site, t))
        physical.update({name: self._sample(name) for name in self._global_names()
                         if name not in physical})
        if self.scaling_mode == "constant":
            if contrast_fixed is None or offset_fixed is None:
                raise ShardMCInputError("model_kwargs: per_angle_mode "
                                        f"{self.per_angle_mode!r} needs contrast_fixed and "
                                        "offset_fixed (see xpcs.model_kwargs)")
            contrast = numpyro.deterministic("contrast", jnp.asarray(contrast_fixed))
            offset = numpyro.deterministic("offset", jnp.asarray(offset_fixed))
        else:
            contrast, offset = physical["contrast"], physical["offset"]
        contrast = jnp.broadcast_to(contrast, (self.n_angles,))
        offset = jnp.broadcast_to(offset, (self.n_angles,))
        geometry = Geometry(t, dt, q, gap, phi)
        if self.likelihood == "rows":
            self._row_factor(physical, contrast, offset, geometry,
                             {"phi_idx": phi_idx, "t1_idx": t1_idx, "c2": c2, **rows})
            return
        if self.noise == "known":
            if sigma is None:
                raise ShardMCInputError("data: noise='known' needs a per-point 'sigma' array")
            scale = sigma
        else:
            if sigma is not None:
                raise ShardMCInputError("data: got a per-point 'sigma' but the model samples "
                                        "sigma (noise='sampled'); use noise='known' or drop it")
            scale = gather(physical[NOISE_PARAM], phi_idx)
        index = PointIndex(phi_idx, t1_idx, t2_idx)
        mean = c2_mean(self.physics, physical, contrast, offset, geometry, index,
                       shear_convention=self.shear_convention)
        numpyro.sample("c2", dist.Normal(mean, scale), obs=c2)

    def _row_factor(self, physical: dict[str, Any], contrast: Any, offset: Any,
                    geometry: Geometry, rows: dict[str, Any]) -> None:
        if rows.get("c2") is None:
            self._row_predictive(physical, contrast, offset, geometry, rows)
            return
        needed = ROW_KEYS + (KNOWN_NOISE_ROW_KEYS if self.noise == "known" else ())
        missing = [k for k in needed if rows.get(k) is None]
        if missing:
            raise ShardMCInputError(f"data: likelihood='rows' with noise={self.noise!r} needs "
                                    f"the row arrays {missing} (see xpcs.prepare)")
        extra = sorted(set(KNOWN_NOISE_ROW_KEYS) & {k for k, v in rows.items()
                                                    if v is not None})
        if extra and self.noise == "sampled":
            raise ShardMCInputError(f"data: got known-noise row arrays {extra} but the model "
                                    "samples sigma (noise='sampled'); use noise='known'")
        sum_squares = row_sum_squares(self.physics, physical, contrast, offset, geometry, rows,
                                      shear_convention=self.shear_convention,
                                      kernel=self.row_kernel)
        sigma = None
        if self.noise == "sampled":
            sigma = jnp.broadcast_to(physical[NOISE_PARAM], (self.n_angles,))
        numpyro.factor("c2", row_log_likelihood(sum_squares, rows, geometry.t.shape[0], sigma))

    def _row_predictive(self, physical: dict[str, Any], contrast: Any, offset: Any,
                        geometry: Geometry, rows: dict[str, Any]) -> None:
        """``c2`` drawn on the rows (R, C) when it is not observed (``Predictive``): the
        model c2 plus noise, raw (not centred). Only each row's data entries t1 < t2 < n_t
        (:func:`~shardmc.xpcs.row_layout.row_mask`) are data; the others are masked out of
        the density and hold filler draws."""
        phi_idx, t1_idx = rows["phi_idx"], rows["t1_idx"]
        n_t = geometry.t.shape[0]
        n_cols = padded_columns(n_t)
        mean = c2_mean(self.physics, physical, contrast, offset, geometry,
                       RowIndex(phi_idx, t1_idx, n_cols), shear_convention=self.shear_convention)
        mask = (jnp.arange(n_cols)[None, :] > t1_idx[:, None]) & (jnp.arange(n_cols) < n_t)
        if self.noise == "known":
            if rows.get("weight") is None:
                raise ShardMCInputError("data: noise='known' on rows needs the row array "
                                        "'weight' (see xpcs.prepare)")
            scale = 1.0 / jnp.sqrt(jnp.where(mask, rows["weight"], 1.0))
        else:
            scale = jnp.broadcast_to(physical[NOISE_PARAM], (self.n_angles,))[phi_idx][:, None]
        numpyro.sample("c2", dist.Normal(mean, scale).mask(mask))

    def _sample(self, name: str) -> Any:
        spec = self.prior[name]
        value = numpyro.sample(self.site_name(name),
                               site_distribution(spec).expand(self.site_shape(name)))
        if spec.kind in LOG_PRIOR_KINDS:
            return numpyro.deterministic(name, jnp.exp(value))
        return value

    def _sample_block(self, site: str, t: Any) -> dict[str, Any]:
        prior = self.block_prior(site, t)
        (log_amplitude, exponent, offset), _ = prior.to_site(numpyro.sample(site, prior))
        values = (jnp.exp(log_amplitude), exponent, offset)
        return {name: numpyro.deterministic(name, v)
                for name, v in zip(self.rate_blocks[site], values, strict=True)}


def site_bounds(spec: PriorSpec) -> tuple[float, float]:
    """A prior's bounds on its site scale (the log for log kinds)."""
    if spec.kind in LOG_PRIOR_KINDS:
        return float(np.log(spec.lower)), float(np.log(spec.upper))
    return spec.lower, spec.upper


def site_distribution(spec: PriorSpec) -> dist.Distribution:
    """A parameter's prior on its site scale: on the log for log kinds (module docstring)."""
    low, high = site_bounds(spec)
    if spec.kind in ("uniform", "log_uniform"):
        return dist.Uniform(low, high)
    loc = np.log(spec.loc) if spec.kind == "log_normal" else spec.loc
    return dist.TruncatedNormal(loc, spec.scale, low=low, high=high)


# -- preparing inputs ------------------------------------------------------------------------
