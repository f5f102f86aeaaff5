"""Arrays in and out of an :class:`~shardmc.xpcs.models.XPCSModel`: the data and keyword
arrays a model is called with (``prepare``), physical values as its sample sites
(``to_site_values``), and the model c2 at given physical values (``mean_c2``,
``fitted_c2``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from shardmc.errors import ShardMCInputError
from shardmc.xpcs.data import XPCSData, estimate_scaling, pool
from shardmc.xpcs.models import XPCSModel
from shardmc.xpcs.physics import Geometry, PointIndex, c2_matrix, c2_mean
from shardmc.xpcs.row_layout import row_arrays


def fixed_scaling(data: XPCSData, per_angle_mode: str) -> dict[str, np.ndarray]:
    """contrast_fixed / offset_fixed (n_phi,) for the constant modes (empty dict otherwise)."""
    if per_angle_mode not in ("constant", "constant_averaged"):
        return {}
    est = estimate_scaling(data)
    contrast, offset = est.contrast, est.offset
    if per_angle_mode == "constant_averaged":
        contrast = np.full_like(contrast, contrast.mean())
        offset = np.full_like(offset, offset.mean())
    return {"contrast_fixed": contrast, "offset_fixed": offset}


def model_kwargs(model: XPCSModel, data: XPCSData) -> dict[str, np.ndarray]:
    """The non-per-point arrays the model needs (see the module docstring)."""
    if data.n_phi != model.n_angles:
        raise ShardMCInputError(f"data.phi: the model expects {model.n_angles} angles, the data "
                                f"has {data.n_phi}")
    kwargs = {
        "t": np.asarray(data.t, dtype=np.float64),
        "dt": np.asarray(data.dt, dtype=np.float64),
        "q": np.asarray(data.q, dtype=np.float64),
        "gap": np.asarray(data.gap, dtype=np.float64),
        "phi": np.asarray(data.phi, dtype=np.float64),
    }
    kwargs.update(fixed_scaling(data, model.per_angle_mode))
    return kwargs


def model_data(model: XPCSModel, data: XPCSData) -> dict[str, np.ndarray]:
    """Arrays for the engine in the model's layout: frame rows or pooled points (known
    noise only with noise="known")."""
    if model.noise == "known" and data.sigma is None:
        raise ShardMCInputError("XPCSData.sigma: noise='known' needs a known sigma array, "
                                "found None")
    if model.likelihood == "rows":
        return row_arrays(data, known_noise=model.noise == "known")
    pooled = pool(data)
    if model.noise != "known":
        pooled.pop("sigma", None)
    return pooled


def prepare(model: XPCSModel, data: XPCSData) -> tuple[dict[str, np.ndarray],
                                                      dict[str, np.ndarray]]:
    """(data, model_kwargs) for ``shardmc.fit(model, data, model_kwargs=...)``."""
    return model_data(model, data), model_kwargs(model, data)


# -- physical values <-> sample sites ----------------------------------------------------------
def to_site_values(model: XPCSModel, physical: Mapping[str, Any],
                   t: Any = None) -> dict[str, Any]:
    """Sample-site values (for ``init_to_value``) from physical values of every latent.

    t: the data's frame times (s); needed when the model has rate blocks."""
    out: dict[str, Any] = {}
    values = {}
    for name in model._global_names():
        if name not in physical:
            raise ShardMCInputError(f"values: missing physical value for {name!r}")
        values[name] = np.broadcast_to(np.asarray(physical[name], dtype=np.float64),
                                       model.site_shape(name)).copy()
    for site, block in model.rate_blocks.items():
        if t is None:
            raise ShardMCInputError("t: the frame times are needed to map values to the rate "
                                    f"block {site!r}")
        amplitude, exponent, offset = (values[n] for n in block)
        with jax.enable_x64(True):
            u = model.block_prior(site, t).from_site(np.log(amplitude), exponent, offset)
            out[site] = np.asarray(u, dtype=np.float64)
    for name in model._global_names():
        site = model.site_name(name)
        if site not in out:
            out[site] = np.log(values[name]) if site != name else values[name]
    return out


def _geometry(kwargs: Mapping[str, Any]) -> Geometry:
    return Geometry(*(jnp.asarray(kwargs[k]) for k in ("t", "dt", "q", "gap", "phi")))


def _scaling_arrays(model: XPCSModel, values: Mapping[str, Any], kwargs: Mapping[str, Any]):
    if model.scaling_mode == "constant":
        contrast, offset = kwargs["contrast_fixed"], kwargs["offset_fixed"]
    else:
        contrast, offset = values["contrast"], values["offset"]
    shape = (model.n_angles,)
    return jnp.broadcast_to(jnp.asarray(contrast), shape), jnp.broadcast_to(jnp.asarray(offset),
                                                                            shape)


def mean_c2(model: XPCSModel, values: Mapping[str, Any], data: Mapping[str, Any],
            kwargs: Mapping[str, Any]) -> Any:
    """Model c2 at the pooled points for physical ``values`` (jit/grad friendly)."""
    contrast, offset = _scaling_arrays(model, values, kwargs)
    index = PointIndex(data["phi_idx"], data["t1_idx"], data["t2_idx"])
    return c2_mean(model.physics, values, contrast, offset, _geometry(kwargs), index,
                   shear_convention=model.shear_convention)


def fitted_c2(model: XPCSModel, values: Mapping[str, Any], data: XPCSData) -> np.ndarray:
    """Full model matrices (n_phi, n_t, n_t) for physical ``values`` (for plots, residuals)."""
    kwargs = model_kwargs(model, data)
    with jax.enable_x64(True):
        contrast, offset = _scaling_arrays(model, values, kwargs)
        return np.asarray(c2_matrix(model.physics, values, contrast, offset, _geometry(kwargs),
                                    shear_convention=model.shear_convention))
