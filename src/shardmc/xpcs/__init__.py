"""XPCS two-time correlation models for shardmc: physics kernels, NumPyro models, data
loading (APS-U / APS-old HDF5, NPZ), synthetic data and a least-squares warm start.

Typical use::

    data, truth = xpcs.simulate("static", n_angles=3, n_t=60, seed=1)
    model = xpcs.XPCSModel.create("static", data.n_phi)
    points, kwargs = xpcs.prepare(model, data)      # dense frame rows (likelihood="rows")
    start = xpcs.warm_start(model, data)
    post = shardmc.fit(model, points, 4, model_kwargs=kwargs, sharding="stratified",
                       strata=points["phi_idx"], init_strategy="value",
                       init_values=start.init_values)

Importing this package sets no JAX configuration; run in float64 (``shardmc.enable_x64``).
"""

from __future__ import annotations

from shardmc.xpcs.data import (
    Scaling,
    XPCSData,
    correct_diagonal,
    estimate_scaling,
    pool,
    reconstruct_half,
    unpool,
)
from shardmc.xpcs.loaders import (
    detect_format,
    load_hdf5,
    load_npz,
    save_npz,
    write_aps_old,
    write_aps_u,
)
from shardmc.xpcs.model_arrays import (
    fitted_c2,
    fixed_scaling,
    mean_c2,
    model_data,
    model_kwargs,
    prepare,
    to_site_values,
)
from shardmc.xpcs.models import PER_ANGLE_MODES, XPCSModel
from shardmc.xpcs.parameters import (
    PARAMETER_TABLE,
    ParameterSpec,
    PriorSpec,
    describe,
    resolve_priors,
)
from shardmc.xpcs.physics import (
    DEFAULT_DT,
    DEFAULT_GAP,
    DEFAULT_Q,
    PHYSICS_MODELS,
    SHEAR_CONVENTIONS,
    Geometry,
    PointIndex,
    c2_matrix,
    correlation_term,
)
from shardmc.xpcs.rates import rate_space_combiner, rate_space_consensus
from shardmc.xpcs.synthetic import DEFAULT_TRUTH, simulate
from shardmc.xpcs.timeorigin import record_time_origin, time_origin_record
from shardmc.xpcs.warmstart import WarmStart, laplace_covariance, warm_start

__all__ = [
    "DEFAULT_DT",
    "DEFAULT_GAP",
    "DEFAULT_Q",
    "DEFAULT_TRUTH",
    "PARAMETER_TABLE",
    "PER_ANGLE_MODES",
    "PHYSICS_MODELS",
    "SHEAR_CONVENTIONS",
    "Geometry",
    "ParameterSpec",
    "PointIndex",
    "PriorSpec",
    "Scaling",
    "WarmStart",
    "XPCSData",
    "XPCSModel",
    "c2_matrix",
    "correct_diagonal",
    "correlation_term",
    "describe",
    "detect_format",
    "estimate_scaling",
    "fitted_c2",
    "fixed_scaling",
    "laplace_covariance",
    "load_hdf5",
    "load_npz",
    "mean_c2",
    "model_data",
    "model_kwargs",
    "pool",
    "prepare",
    "rate_space_combiner",
    "rate_space_consensus",
    "reconstruct_half",
    "record_time_origin",
    "resolve_priors",
    "save_npz",
    "simulate",
    "time_origin_record",
    "to_site_values",
    "unpool",
    "warm_start",
    "write_aps_old",
    "write_aps_u",
]
