"""XPCS data: validation, pooling, scaling estimates, HDF5/NPZ loaders and their errors."""

import jax

jax.config.update("jax_enable_x64", True)

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from shardmc.errors import ShardMCInputError  # noqa: E402
from shardmc.xpcs import (  # noqa: E402
    XPCSData,
    correct_diagonal,
    detect_format,
    estimate_scaling,
    load_hdf5,
    load_npz,
    pool,
    reconstruct_half,
    save_npz,
    simulate,
    unpool,
    write_aps_old,
    write_aps_u,
)
from shardmc.xpcs.loaders import (  # noqa: E402
    APS_OLD_MAPS,
    APS_OLD_PHI,
    APS_U_BINS,
    APS_U_MAPS,
    APS_U_PHI,
    APS_U_Q,
)


@pytest.fixture(scope="module")
def sim():
    return simulate("static", n_angles=3, n_t=20, noise=0.01, seed=11)[0]


def kwargs_of(data, **changes):
    base = {"c2": data.c2, "t": data.t, "q": data.q, "phi": data.phi, "dt": data.dt}
    return {**base, **changes}


# -- XPCSData validation ------------------------------------------------------------------
@pytest.mark.parametrize(("changes", "field", "what"), [
    ({"c2": "bad"}, "c2", "numeric"),
    ({"c2": np.ones((20, 20))}, "c2", "3-D"),
    ({"c2": np.ones((3, 20, 19))}, "c2", "square"),
    ({"c2": np.ones((3, 1, 1)), "t": np.zeros(1)}, "c2", "empty frame range"),
    ({"t": np.arange(19.0)}, "t", "20 frame times"),
    ({"t": np.arange(20.0)[::-1]}, "t", "increasing"),
    ({"phi": np.array([0.0, 10.0])}, "phi", "3 angles"),
    ({"phi": np.array([0.0, 10.0, 0.0])}, "phi", "duplicate"),
    ({"phi": np.array([0.0, np.nan, 5.0])}, "phi", "finite"),
    ({"dt": 0.0}, "dt", "> 0"),
    ({"dt": -0.1}, "dt", "> 0"),
    ({"q": np.inf}, "q", "finite"),
    ({"sigma": np.ones((3, 20, 2))}, "sigma", "shape"),
    ({"sigma": np.zeros((3, 20, 20))}, "sigma", "> 0"),
])
def test_validation_names_the_field(sim, changes, field, what):
    with pytest.raises(ShardMCInputError, match=f"XPCSData.{field}") as err:
        XPCSData(**kwargs_of(sim, **changes))
    assert what in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_c2_is_rejected_with_location(sim, bad):
    c2 = sim.c2.copy()
    c2[1, 4, 7] = bad
    with pytest.raises(ShardMCInputError, match=r"XPCSData.c2.*\(1, 4, 7\)"):
        XPCSData(**kwargs_of(sim, c2=c2))


# -- pooling ------------------------------------------------------------------------------
def test_pool_uses_upper_triangle_only(sim):
    points = pool(sim)
    n = 3 * 20 * 19 // 2
    assert sim.num_points == n
    assert {k: v.shape for k, v in points.items()} == {k: (n,) for k in
                                                       ("phi_idx", "t1_idx", "t2_idx", "c2")}
    assert np.all(points["t1_idx"] < points["t2_idx"])  # diagonal excluded, one triangle
    assert points["phi_idx"].dtype == np.int32 and points["t1_idx"].dtype == np.int32
    np.testing.assert_array_equal(points["c2"],
                                  sim.c2[points["phi_idx"], points["t1_idx"], points["t2_idx"]])
    triples = set(zip(*(points[k].tolist() for k in ("phi_idx", "t1_idx", "t2_idx")),
                      strict=True))
    assert len(triples) == n
    back = unpool(points["c2"], sim)
    off = ~np.eye(20, dtype=bool)
    np.testing.assert_array_equal(back[:, off], sim.c2[:, off])


def test_pool_carries_known_sigma():
    data = simulate("static", n_angles=2, n_t=8, seed=0, known_sigma=True, noise=0.02)[0]
    points = pool(data)
    np.testing.assert_allclose(points["sigma"], 0.02)


def test_estimate_scaling_follows_the_quantile_definition(sim):
    """offset = 10th percentile at the largest 20 % of lags (m = ceil(0.2 (n_t − 1)) = 4
    lags), contrast = 90th percentile at the smallest 20 % minus offset (REFERENCE.md)."""
    est = estimate_scaling(sim)
    lag = np.subtract.outer(np.arange(20), np.arange(20)).T  # t2 − t1
    for a in range(3):
        small = sim.c2[a][(lag >= 1) & (lag <= 4)]
        large = sim.c2[a][lag >= 19 - 4 + 1 - 1 + 1]  # lags 16..19
        assert est.offset[a] == pytest.approx(np.quantile(large, 0.1))
        assert est.contrast[a] == pytest.approx(np.quantile(small, 0.9) - est.offset[a])


def test_estimate_scaling_on_a_decayed_plateau():
    data, truth = simulate("static", {"D0": 3e4, "alpha": 0.0, "D_offset": 0.0}, n_angles=2,
                           n_t=100, noise=1e-4, contrast=[0.2, 0.4], offset=[1.0, 1.1], seed=0)
    est = estimate_scaling(data)
    np.testing.assert_allclose(est.offset, truth["offset"], atol=2e-3)
    np.testing.assert_allclose(est.contrast, truth["contrast"], rtol=0.2)


def test_half_matrix_and_diagonal_helpers():
    half = np.triu(np.arange(16.0).reshape(4, 4))
    full = reconstruct_half(half)
    np.testing.assert_array_equal(full, full.T)
    np.testing.assert_array_equal(np.diag(full), np.diag(half))
    fixed = correct_diagonal(full)
    assert fixed[0, 0] == full[0, 1] and fixed[3, 3] == full[2, 3]
    assert fixed[1, 1] == pytest.approx((full[0, 1] + full[1, 2]) / 2)


# -- loaders ------------------------------------------------------------------------------
def test_aps_u_round_trip(sim, tmp_path):
    path = write_aps_u(tmp_path / "u.h5", sim, other_q=[0.0030, 0.0090])
    assert detect_format(path) == "aps_u"
    loaded = load_hdf5(path, q=sim.q, dt=sim.dt)
    np.testing.assert_array_equal(loaded.c2, sim.c2)
    np.testing.assert_array_equal(loaded.t, sim.t)
    np.testing.assert_array_equal(loaded.phi, sim.phi)
    assert loaded.q == sim.q and loaded.dt == sim.dt


def test_aps_old_round_trip(sim, tmp_path):
    path = write_aps_old(tmp_path / "old.h5", sim)
    assert detect_format(path) == "aps_old"
    loaded = load_hdf5(path, q=sim.q * 1.02, dt=sim.dt)
    np.testing.assert_array_equal(loaded.c2, sim.c2)
    np.testing.assert_array_equal(loaded.phi, sim.phi)


def test_frame_and_angle_selection(sim, tmp_path):
    path = write_aps_u(tmp_path / "u.h5", sim)
    part = load_hdf5(path, q=sim.q, start_frame=3, end_frame=15, phi=[sim.phi[2], sim.phi[0]],
                     dt=sim.dt)
    expected = correct_diagonal(sim.c2[[2, 0]][:, 2:15, 2:15])
    np.testing.assert_allclose(part.c2, expected, rtol=1e-15)
    np.testing.assert_array_equal(part.phi, sim.phi[[2, 0]])
    np.testing.assert_allclose(part.t, sim.dt * np.arange(13))
    part_file = load_hdf5(path, q=sim.q, start_frame=3, end_frame=15, time_origin="file",
                          dt=sim.dt)
    np.testing.assert_allclose(part_file.t, sim.dt * np.arange(2, 15))


def _corrupt(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)
    return path


def _replace(name, value):
    def fn(f):
        del f[name]
        f.create_dataset(name, data=value)
    return fn


@pytest.mark.parametrize(("mutate", "dataset", "kwargs"), [
    (lambda f: f.__delitem__(APS_U_BINS), APS_U_BINS, {}),
    (lambda f: f.__delitem__(APS_U_PHI), APS_U_PHI, {}),
    (_replace(APS_U_Q, np.ones((2, 3)) * 0.0054), APS_U_Q, {}),
    (_replace(APS_U_BINS, np.array([1, 2, 3, 99])), APS_U_MAPS, {}),
    (_replace(APS_U_BINS, np.array([1, 2, 99])), APS_U_BINS, {}),
    (_replace(f"{APS_U_MAPS}/c2_00002", np.full((20, 20), np.nan)), f"{APS_U_MAPS}/c2_00002",
     {}),
    (_replace(f"{APS_U_MAPS}/c2_00003", np.ones((20, 19))), f"{APS_U_MAPS}/c2_00003", {}),
    (_replace(f"{APS_U_MAPS}/c2_00001", np.ones(20)), f"{APS_U_MAPS}/c2_00001", {}),
    (_replace(f"{APS_U_MAPS}/c2_00003", np.ones((21, 21))), f"{APS_U_MAPS}/c2_00003", {}),
    (lambda f: None, APS_U_Q, {"q": 0.02}),
    (lambda f: None, APS_U_PHI, {"phi": [33.0]}),
    (lambda f: None, f"{APS_U_MAPS}/c2_00001", {"start_frame": 15, "end_frame": 15}),
    (lambda f: None, f"{APS_U_MAPS}/c2_00001", {"end_frame": 25}),
])
def test_malformed_aps_u_files_name_the_dataset(sim, tmp_path, mutate, dataset, kwargs):
    path = _corrupt(write_aps_u(tmp_path / "bad.h5", sim), mutate)
    with pytest.raises(ShardMCInputError) as err:
        load_hdf5(path, **{"q": sim.q, **kwargs})
    assert f"'{dataset}'" in str(err.value), str(err.value)


def test_nan_outside_selected_frames_is_ignored(sim, tmp_path):
    half = np.triu(sim.c2[1])
    half[0, 18] = np.nan
    path = _corrupt(write_aps_u(tmp_path / "nan.h5", sim),
                    _replace(f"{APS_U_MAPS}/c2_00002", half))
    assert load_hdf5(path, q=sim.q, start_frame=2).n_t == 19


def test_malformed_aps_old_files_name_the_dataset(sim, tmp_path):
    path = _corrupt(write_aps_old(tmp_path / "old.h5", sim), lambda f: f.__delitem__(APS_OLD_PHI))
    with pytest.raises(ShardMCInputError, match=f"'{APS_OLD_PHI}' is missing"):
        load_hdf5(path, q=sim.q, layout="aps_old")
    path = _corrupt(write_aps_old(tmp_path / "old2.h5", sim),
                    _replace(f"{APS_OLD_MAPS}/c2_00001", np.full((20, 20), np.inf)))
    with pytest.raises(ShardMCInputError, match=f"'{APS_OLD_MAPS}/c2_00001' holds NaN"):
        load_hdf5(path, q=sim.q)


def test_unknown_layout_and_missing_file(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("something", data=np.ones(3))
    with pytest.raises(ShardMCInputError, match=APS_U_Q):
        load_hdf5(tmp_path / "x.h5")
    with pytest.raises(ShardMCInputError, match="file not found"):
        load_hdf5(tmp_path / "nope.h5")


def test_npz_round_trip_and_missing_key(tmp_path):
    data = simulate("static", n_angles=2, n_t=8, seed=0, known_sigma=True)[0]
    loaded = load_npz(save_npz(tmp_path / "d.npz", data))
    for name in ("c2", "t", "phi", "sigma"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(data, name))
    assert (loaded.q, loaded.dt, loaded.gap) == (data.q, data.dt, data.gap)
    np.savez(tmp_path / "bad.npz", c2=data.c2, t=data.t)
    with pytest.raises(ShardMCInputError, match="'q'"):
        load_npz(tmp_path / "bad.npz")


def test_select_angles_and_frames_keep_sigma_in_step():
    data = simulate("static", n_angles=3, n_t=10, seed=0, known_sigma=True, noise=0.02)[0]
    part = data.select_angles([2, 0]).select_frames(1, 8)
    np.testing.assert_array_equal(part.c2, data.c2[[2, 0]][:, 1:8, 1:8])
    np.testing.assert_array_equal(part.t, data.t[1:8])
    assert part.sigma.shape == part.c2.shape and part.num_points == 2 * 7 * 6 // 2
