"""Config -> loaded data, model and the arguments of ``shardmc.fit`` (no sampling, no warm
start)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from shardmc.config.backends import backend_options
from shardmc.config.schema import RATE_SPACE_METHOD, DataConfig, RunConfig
from shardmc.errors import ShardMCInputError

#: Bytes read per step when hashing a data file.
HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class RunInputs:
    """Everything ``shardmc.fit`` needs, except the warm start's ``init_values``.

    Call ``shardmc.fit(inputs.model, inputs.points, model_kwargs=inputs.model_kwargs,
    init_values=..., **inputs.fit_kwargs)``; with ``warm_start`` true (the config's
    ``sampling.warm_start``) the sampler's init_strategy is "value" and init_values must
    come from ``xpcs.warm_start(inputs.model, inputs.data, seed=...)``.
    """

    config: RunConfig
    data: Any  # XPCSData
    model: Any  # XPCSModel
    points: dict[str, np.ndarray]
    model_kwargs: dict[str, np.ndarray]
    fit_kwargs: dict[str, Any]
    warm_start: bool
    seed: int


def data_hash(path: str | Path) -> str:
    """sha256 (hex) of the file's bytes, read in HASH_CHUNK_BYTES steps."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _match_npz(data: Any, cfg: DataConfig) -> Any:
    """Apply the config's q check, angle and frame selection to data read from an NPZ."""
    where = f"data.file {cfg.file}"
    if abs(data.q - cfg.q) > cfg.q_tolerance * cfg.q:
        raise ShardMCInputError(f"data.q: expected the file's q within {cfg.q_tolerance:.0%}, "
                                f"found q = {cfg.q} Å⁻¹ while {where} holds q = {data.q}")
    for key, stored in (("dt", data.dt), ("gap", data.gap)):
        wanted = getattr(cfg, key)
        if wanted is not None and not np.isclose(wanted, stored, rtol=1e-9):
            raise ShardMCInputError(f"data.{key}: expected null or the value stored in "
                                    f"{where} ({stored}), found {wanted}")
    if cfg.phi is not None:
        idx = []
        for target in cfg.phi:
            i = int(np.argmin(np.abs(data.phi - target)))
            if abs(data.phi[i] - target) > cfg.phi_tolerance:
                raise ShardMCInputError(f"data.phi: expected angles present in {where} "
                                        f"(tolerance {cfg.phi_tolerance} deg; available "
                                        f"{data.phi.tolist()}), found {target}")
            idx.append(i)
        data = data.select_angles(idx)
    end = data.n_t if cfg.end_frame is None else cfg.end_frame
    if end > data.n_t or end - cfg.start_frame + 1 < 2:
        raise ShardMCInputError(f"data.end_frame: expected 1 <= start_frame < end_frame <= "
                                f"{data.n_t} (frames in {where}), found start_frame="
                                f"{cfg.start_frame}, end_frame={end}")
    data = data.select_frames(cfg.start_frame - 1, end)
    if cfg.t0 is not None:  # the stored grid, its first kept frame moved to t0
        return data.with_t0(cfg.t0)
    if cfg.time_origin == "start":
        data = replace(data, t=data.t - data.t[0])
    return data


def load_data(cfg: DataConfig) -> Any:
    """The XPCSData the config selects (HDF5 via load_hdf5, NPZ via load_npz + selection)."""
    from shardmc.xpcs import load_hdf5, load_npz

    try:
        if cfg.kind == "npz":
            return _match_npz(load_npz(cfg.file), cfg)
        layout = "auto" if cfg.format == "auto" else cfg.format
        return load_hdf5(cfg.file, q=cfg.q, q_tolerance=cfg.q_tolerance, phi=cfg.phi,
                         phi_tolerance=cfg.phi_tolerance, start_frame=cfg.start_frame,
                         end_frame=cfg.end_frame, dt=cfg.dt, gap=cfg.gap,
                         time_origin=cfg.time_origin, layout=layout, t0=cfg.t0)
    except ShardMCInputError as exc:
        text = str(exc)
        if text.startswith("data."):
            raise
        if not text.startswith(str(cfg.file)):
            text = f"{cfg.file}: {text}"
        raise ShardMCInputError(f"data.file: {text}") from None


def _check_data_fits_model(cfg: RunConfig, data: Any) -> None:
    if cfg.model.noise == "known" and data.sigma is None:
        raise ShardMCInputError(f"model.noise: expected 'sampled' for {cfg.data.file} (it "
                                "holds no sigma array; 'known' needs one, NPZ key 'sigma'), "
                                "found 'known'")
    entries = data.num_points if cfg.model.likelihood == "points" else data.n_phi * (data.n_t - 1)
    if cfg.sharding.num_shards > entries:
        what = "points" if cfg.model.likelihood == "points" else "frame rows"
        raise ShardMCInputError(f"sharding.num_shards: expected at most the number of {what} "
                                f"({entries}), found {cfg.sharding.num_shards}")


def _check_backend(cfg: RunConfig) -> None:
    """The backend is installed; dask options pass the dask backend's own cross-checks
    (``backends.jobqueue.validate_options``: batch clusters need memory and interface,
    TLS rules, walltime format, ...), without starting anything."""
    from shardmc.backends import BACKENDS

    name = cfg.backend.name
    if name != "auto" and name not in BACKENDS:
        raise ShardMCInputError(f"backend.name: expected a backend available here (one of "
                                f"{', '.join(['auto', *BACKENDS])}), found {name!r}")
    if name == "dask":
        try:
            from shardmc.backends.jobqueue import validate_options
        except ImportError:  # a dask backend without that module: it checks at start
            return
        validate_options(backend_options(cfg.backend))


def fit_kwargs(cfg: RunConfig, points: dict[str, np.ndarray]) -> dict[str, Any]:
    """Keyword arguments of ``shardmc.fit`` besides model, data, model_kwargs, init_values."""
    from shardmc.core.input_checks import validate_config

    by_angle = cfg.sharding.method in ("stratified", "interleaved")
    return {
        "num_shards": cfg.sharding.num_shards,
        "seed": cfg.run.seed,
        "sharding": cfg.sharding.method,
        "strata": points["phi_idx"] if by_angle else None,
        "method": cfg.combine.method,  # RATE_SPACE_METHOD: made a function in build_run
        "space": cfg.combine.space,
        "combine_options": dict(cfg.combine.options),
        "backend": cfg.backend.name,
        "backend_options": backend_options(cfg.backend),
        "config": validate_config(cfg.sampling.sampler_config()),
        "on_shard_failure": cfg.run.on_shard_failure,
        "early_abort": cfg.run.early_abort,
        "progress": cfg.run.progress,
    }


def build_run(cfg: RunConfig) -> RunInputs:
    """Load the data, build the XPCSModel, pool the points; every check before sampling."""
    from shardmc.xpcs import XPCSModel, prepare

    _check_backend(cfg)
    data = load_data(cfg.data)
    _check_data_fits_model(cfg, data)
    m = cfg.model
    model = XPCSModel.create(m.physics, data.n_phi, per_angle_mode=m.per_angle_mode,
                             priors=m.prior_overrides(), noise=m.noise,
                             shear_convention=m.shear_convention,
                             parameterization=m.parameterization, likelihood=m.likelihood)
    points, kwargs = prepare(model, data)
    kwargs_fit = fit_kwargs(cfg, points)
    if cfg.combine.method == RATE_SPACE_METHOD:
        from shardmc.xpcs import rate_space_combiner

        kwargs_fit["method"] = rate_space_combiner(model, data.t,
                                                   **kwargs_fit.pop("combine_options"))
        kwargs_fit["combine_options"] = {}
    return RunInputs(config=cfg, data=data, model=model, points=points, model_kwargs=kwargs,
                     fit_kwargs=kwargs_fit, warm_start=cfg.sampling.warm_start,
                     seed=cfg.run.seed)
