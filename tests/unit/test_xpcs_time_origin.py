"""The stated time origin ``data.t0`` and the dt/2 rate-floor finding (docs/xpcs.md, "Time
origin"): simulator, container, loaders, config, ``shardmc simulate`` files, the record in
the provenance, ``diagnose()`` and the run log. The fits are in
tests/statistical/test_xpcs_time_origin_recovery.py."""

from __future__ import annotations

import dataclasses
import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from shardmc.config import config_from_dict, load_config, load_data
from shardmc.core.diagnosis import diagnose
from shardmc.core.posterior import Posterior
from shardmc.errors import ShardMCInputError
from shardmc.workflow.runs import _with_time_origin
from shardmc.xpcs import (
    XPCSModel,
    load_hdf5,
    load_npz,
    record_time_origin,
    save_npz,
    simulate,
    time_origin_record,
    write_aps_u,
)
from shardmc.xpcs.simulate_files import CONFIG_FILE, TRUTH_FILE, write_synthetic

DT = 0.1


@pytest.fixture(scope="module")
def sim():
    return simulate("static", n_angles=2, n_t=12, dt=DT, seed=0)[0]


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(ShardMCInputError) as err:
        fn(*args, **kwargs)
    return str(err.value)


def data_cfg(file, **data) -> dict:
    return {"data": {"file": str(file), **data}, "model": {"physics": "static"}}


# -- grid -------------------------------------------------------------------------------------
def test_simulate_places_the_first_frame_at_t0(sim):
    assert np.array_equal(sim.t, DT * np.arange(12))  # the default grid, bit for bit
    late, _ = simulate("static", n_angles=2, n_t=12, dt=DT, seed=0, t0=DT)
    assert np.allclose(late.t, DT + DT * np.arange(12), rtol=0, atol=1e-15)
    assert late.t0 == DT and late.floored_frames == 0 and sim.floored_frames == 1
    assert not np.allclose(late.c2, sim.c2)  # alpha < 0: the origin changes the data
    assert "t0: expected a finite time >= 0" in error_of(simulate, "static", t0=-1.0)


def test_with_t0_shifts_the_grid_and_keeps_the_steps(sim):
    moved = sim.with_t0(2.5)
    assert moved.t0 == 2.5 and np.allclose(np.diff(moved.t), np.diff(sim.t))
    assert moved.with_t0(0.0).t0 == 0.0 and sim.rate_time_floor == DT / 2
    assert "t0: expected a finite time >= 0 (s), found nan" in error_of(sim.with_t0, np.nan)


def test_load_hdf5_t0(tmp_path, sim):
    path = write_aps_u(tmp_path / "d.h5", sim)
    kept = load_hdf5(path, q=sim.q, dt=DT, start_frame=3, end_frame=10, t0=0.35)
    assert np.allclose(kept.t, 0.35 + DT * np.arange(8), rtol=0, atol=1e-15)
    start = load_hdf5(path, q=sim.q, dt=DT, start_frame=3, end_frame=10)
    file = load_hdf5(path, q=sim.q, dt=DT, start_frame=3, end_frame=10, time_origin="file")
    assert np.array_equal(start.t, DT * np.arange(8))  # without t0: today's grids
    assert np.array_equal(file.t, DT * (2 + np.arange(8)))
    msg = error_of(load_hdf5, path, q=sim.q, time_origin="file", t0=0.2)
    assert msg.startswith("t0: expected None with time_origin='file'"), msg
    assert "t0: expected a finite time >= 0" in error_of(load_hdf5, path, q=sim.q, t0=-0.1)


# -- config -----------------------------------------------------------------------------------
def test_config_t0_places_hdf5_frames(tmp_path, sim):
    path = write_aps_u(tmp_path / "d.h5", sim)
    cfg = config_from_dict(data_cfg(path, start_frame=4, t0=0.1))
    assert cfg.data.t0 == 0.1
    assert np.allclose(load_data(cfg.data).t, 0.1 + DT * np.arange(9), rtol=0, atol=1e-15)
    default = config_from_dict(data_cfg(path, start_frame=4))
    assert default.data.t0 is None and load_data(default.data).t0 == 0.0


def test_config_t0_shifts_the_npz_grid(tmp_path):
    stored, _ = simulate("static", n_angles=1, n_t=10, dt=DT, seed=1, t0=0.3)
    path = save_npz(tmp_path / "d.npz", stored)
    stated = load_data(config_from_dict(data_cfg(path, start_frame=2, t0=0.05)).data)
    assert np.allclose(stated.t, 0.05 + DT * np.arange(9), rtol=0, atol=1e-15)
    kept = load_data(config_from_dict(data_cfg(path, start_frame=2, time_origin="file")).data)
    assert np.allclose(kept.t, stored.t[1:])  # the file's own times
    assert load_data(config_from_dict(data_cfg(path, start_frame=2)).data).t0 == 0.0


@pytest.mark.parametrize(("data", "message"), [
    ({"t0": 0.1, "time_origin": "file"}, "data.t0: expected null with time_origin 'file'"),
    ({"t0": -0.1}, "data.t0: "),
    ({"t0": True}, "data.t0: "),
])
def test_config_t0_errors_name_the_key(tmp_path, sim, data, message):
    path = write_aps_u(tmp_path / "d.h5", sim)
    msg = error_of(config_from_dict, data_cfg(path, **data))
    assert message in msg, msg


def test_simulated_files_record_t0_and_round_trip(tmp_path):
    write_synthetic(tmp_path, n_angles=1, n_frames=8, t0=0.2)
    raw = yaml.safe_load((tmp_path / CONFIG_FILE).read_text())
    assert raw["data"]["t0"] == pytest.approx(0.2)
    assert json.loads((tmp_path / TRUTH_FILE).read_text())["t0"] == pytest.approx(0.2)
    data = load_data(load_config(tmp_path / CONFIG_FILE).data)
    assert data.t0 == pytest.approx(0.2) and data.floored_frames == 0
    write_synthetic(tmp_path / "default", n_angles=1, n_frames=8)  # one frame time late
    raw = yaml.safe_load((tmp_path / "default" / CONFIG_FILE).read_text())
    assert raw["data"]["t0"] == pytest.approx(raw["data"]["dt"])
    assert load_data(load_config(tmp_path / "default" / CONFIG_FILE).data).floored_frames == 0
    with pytest.raises(ShardMCInputError, match="--t0: expected a time >= 0"):
        write_synthetic(tmp_path / "bad", t0=-1.0)


def test_npz_round_trip_keeps_t0(tmp_path):
    late, _ = simulate("static", n_angles=1, n_t=6, dt=DT, seed=0, t0=0.7)
    assert load_npz(save_npz(tmp_path / "d.npz", late)).t0 == 0.7


# -- the record and its finding -----------------------------------------------------------------
def test_record_says_when_the_floor_matters(sim):
    static = XPCSModel.create("static", sim.n_phi)
    rec = time_origin_record(static, sim)
    assert (rec["t0"], rec["dt"], rec["floor"], rec["floored_frames"]) == (0.0, DT, DT / 2, 1)
    assert rec["negative_exponents"] == ["alpha"]
    for words in ("t0 = 0 s", "dt/2 = 0.05 s", "alpha < 0", "D0, alpha, D_offset", "data.t0"):
        assert words in rec["message"], rec["message"]
    json.dumps(rec)  # JSON-able: it travels in posterior.nc
    assert time_origin_record(static, sim.with_t0(DT / 2))["message"] is None  # not below
    positive = XPCSModel.create("static", sim.n_phi, priors={"alpha": (0.0, 2.0)})
    assert time_origin_record(positive, sim)["message"] is None
    laminar = time_origin_record(XPCSModel.create("laminar_flow", sim.n_phi), sim)
    assert laminar["negative_exponents"] == ["alpha", "beta"]
    assert "gamma_dot_0, beta, gamma_dot_offset" in laminar["message"]
    assert "v0" not in laminar["message"]


def _posterior(alpha: float) -> Posterior:
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(2, 2, 200, 1))
    diag = {"rhat": np.ones((2, 1)), "ess_bulk": np.full((2, 1), 800.0),
            "ess_tail": np.full((2, 1), 800.0), "bfmi": np.ones((2, 2)),
            "divergences": np.zeros(2, dtype=int), "tree_depth_saturation": np.zeros(2)}
    flat = draws.reshape(-1, 1)
    return Posterior(samples={"alpha": alpha + 0.01 * flat[:, 0]}, unconstrained=flat,
                     coords=["x"], shard_draws=draws, shard_stats={}, diagnostics=diag,
                     provenance={})


def test_diagnose_reports_the_floor_once(sim):
    model = XPCSModel.create("static", sim.n_phi)
    plain = _posterior(-1.5)
    assert not [i for i in diagnose(plain).issues if i.kind == "time_origin"]
    post = record_time_origin(plain, model, sim)
    found = [i for i in diagnose(post).issues if i.kind == "time_origin"]
    assert len(found) == 1 and found[0].severity == "warning" and found[0].params == ["alpha"]
    assert "posterior median alpha -1.5" in found[0].message
    stored = dataclasses.replace(post, provenance=json.loads(json.dumps(post.provenance)))
    again = [i for i in stored.diagnose().issues if i.kind == "time_origin"]  # posterior.nc
    assert [i.message for i in again] == [found[0].message]
    up = [i for i in diagnose(record_time_origin(_posterior(0.5), model, sim)).issues
          if i.kind == "time_origin"]
    assert len(up) == 1 and up[0].severity == "info"
    stated = record_time_origin(plain, model, sim.with_t0(DT))
    assert stated.provenance["xpcs_time"]["t0"] == DT
    assert not [i for i in diagnose(stated).issues if i.kind == "time_origin"]


def test_run_path_logs_the_floor_once(sim, caplog):
    inputs = SimpleNamespace(model=XPCSModel.create("static", sim.n_phi), data=sim)
    with caplog.at_level(logging.INFO, logger="shardmc"):
        post = _with_time_origin(_posterior(-1.5), inputs)
    records = [r for r in caplog.records if r.getMessage().startswith("time origin")]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert post.provenance["xpcs_time"]["floored_frames"] == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shardmc"):
        _with_time_origin(_posterior(-1.5), SimpleNamespace(model=inputs.model,
                                                            data=sim.with_t0(DT)))
    assert not [r for r in caplog.records if "time origin" in r.getMessage()]
