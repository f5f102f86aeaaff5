"""Frame rows and their structured kernels equal the point-list kernel, value and gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import potential_energy, unconstrain_fn

from shardmc import xpcs
from shardmc.core.sharding import assign_points, shard_arrays
from shardmc.core.tempering import observed_site_names, tempered_model
from shardmc.xpcs import row_layout as RL
from shardmc.xpcs import row_likelihood as RK
from shardmc.xpcs.physics import Geometry, PointIndex, c2_mean

#: Agreement asked of the row kernels against the point-list kernel (relative, value and
#: gradient; DESIGN "Structured likelihood"). Float64 sums of ~1e4 terms agree to ~1e-14.
EXACT = 1e-10


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _sum_squares_both(physics, params, data, *, convention="published", kernel="auto",
                      known=False):
    """Σ SS over rows and over the pooled points, as functions of (params, contrast, offset)."""
    rows = {k: jnp.asarray(v) for k, v in RL.row_arrays(data, known_noise=known).items()}
    pts = {k: jnp.asarray(v) for k, v in xpcs.pool(data).items()}
    geometry = Geometry(*(jnp.asarray(x) for x in (data.t, data.dt, data.q, data.gap,
                                                   data.phi)))
    index = PointIndex(pts["phi_idx"], pts["t1_idx"], pts["t2_idx"])
    weight = 1.0 / pts["sigma"] ** 2 if known else 1.0

    def on_points(p, contrast, offset):
        mean = c2_mean(physics, p, contrast, offset, geometry, index,
                       shear_convention=convention)
        return jnp.sum(weight * (pts["c2"] - mean) ** 2)

    def on_rows(p, contrast, offset):
        return jnp.sum(RK.row_sum_squares(physics, p, contrast, offset, geometry, rows,
                                          shear_convention=convention, kernel=kernel))

    return on_rows, on_points


def _assert_same(f_rows, f_points, args):
    (v_r, g_r), (v_p, g_p) = (jax.value_and_grad(f, argnums=(0, 1, 2))(*args)
                              for f in (f_rows, f_points))
    assert abs(float(v_r) - float(v_p)) <= EXACT * abs(float(v_p))
    flat_r, flat_p = ravel_pytree(g_r)[0], ravel_pytree(g_p)[0]
    assert np.all(np.isfinite(flat_r))
    np.testing.assert_allclose(flat_r, flat_p, rtol=EXACT,
                               atol=EXACT * float(jnp.max(jnp.abs(flat_p))))


def _params(physics, rng, **fixed):
    _, truth = xpcs.simulate(physics, n_angles=1, n_t=4)
    out = {k: jnp.asarray(v * (1 + 0.2 * rng.uniform(-1, 1)))
           for k, v in truth.items() if k not in ("contrast", "offset", "sigma")}
    out.update({k: jnp.asarray(v) for k, v in fixed.items()})
    return out


def _data(physics, *, n_t=75, n_angles=3, seed=0, t=None, q=None, **params):
    data, _ = xpcs.simulate(physics, params or None, n_angles=n_angles, n_t=n_t, seed=seed,
                            known_sigma=True, **({} if q is None else {"q": q}))
    if t is not None:
        data = xpcs.XPCSData(c2=data.c2, t=t, q=data.q, phi=data.phi, dt=float(np.diff(t).min()),
                             sigma=data.sigma, gap=data.gap)
    return data


#: Regimes of the static kernel: (name, data options, parameter overrides).
STATIC_CASES = [
    ("typical", {}, {}),
    ("alpha<0 on the dt/2 floor", {}, {"alpha": -1.6, "D0": 2e4, "D_offset": 50.0}),
    ("J floored at 0", {}, {"D0": 1e3, "alpha": 1.0, "D_offset": -3e3}),
    ("q2 dC > 700 within a few frames", {"q": 2.0}, {"D0": 9e4, "alpha": 0.2}),
    ("non-uniform t", {"t": np.cumsum(np.r_[0.0, np.random.default_rng(3).uniform(
        0.02, 0.3, 74)])}, {"alpha": -0.7}),
    ("one block", {"n_t": 20}, {}),
]


@pytest.mark.parametrize("name, data_opts, overrides", STATIC_CASES,
                         ids=[c[0] for c in STATIC_CASES])
@pytest.mark.parametrize("known", [False, True], ids=["sampled", "known"])
@pytest.mark.parametrize("kernel", ["auto", "dense"])
def test_static_row_kernels_equal_the_point_kernel(name, data_opts, overrides, known, kernel):
    rng = np.random.default_rng(len(name))
    data = _data("static", **data_opts)
    params = _params("static", rng, **overrides)
    f_rows, f_points = _sum_squares_both("static", params, data, kernel=kernel, known=known)
    contrast, offset = jnp.array([0.3, 0.25, 0.2]), jnp.array([1.0, 1.01, 0.99])
    _assert_same(f_rows, f_points, (params, contrast, offset))


@pytest.mark.parametrize("convention", ["published", "reference"])
@pytest.mark.parametrize("overrides", [{}, {"alpha": -1.3, "beta": -0.4, "gamma_dot_offset": -2e-3},
                                       {"D_offset": -5e3},
                                       {"gamma_dot_0": 1e-2, "beta": 0.0}])  # phases ~10² rad
@pytest.mark.parametrize("known", [False, True], ids=["sampled", "known"])
def test_laminar_row_kernel_equals_the_point_kernel(convention, overrides, known):
    rng = np.random.default_rng(1)
    data = _data("laminar_flow", n_t=66)
    params = _params("laminar_flow", rng, **overrides)
    f_rows, f_points = _sum_squares_both("laminar_flow", params, data, convention=convention,
                                         known=known)
    _assert_same(f_rows, f_points, (params, jnp.array([0.3, 0.2, 0.25]), jnp.full(3, 1.0)))


@pytest.mark.parametrize("overrides", [{}, {"f1": 8.0, "f2": 2.0}, {"alpha_sample": -1.5}])
def test_two_component_row_kernel_equals_the_point_kernel(overrides):
    rng = np.random.default_rng(2)
    data = _data("two_component", n_t=66)
    params = _params("two_component", rng, **overrides)
    f_rows, f_points = _sum_squares_both("two_component", params, data)
    _assert_same(f_rows, f_points, (params, jnp.array([0.3, 0.2, 0.25]), jnp.full(3, 1.0)))


def test_decayed_row_sums_equal_direct_sums():
    """The block-factored sums against the O(R n_t) direct sums, with data and without."""
    rng = np.random.default_rng(0)
    n_t, n_cols = 70, RL.padded_columns(70)
    decay = np.cumsum(rng.exponential(3.0, n_t))  # non-decreasing, steps of e^-3 on average
    decay[10:20] = decay[9]  # flat stretch (J = 0)
    t1 = rng.integers(0, n_t - 1, 40)
    values = rng.normal(size=(40, n_cols)) * RL.row_mask(t1, n_t, n_cols)
    cols = np.arange(n_t)
    later = cols[None, :] > t1[:, None]
    direct = np.exp(-np.where(later, decay[None, :] - decay[t1][:, None], 0.0)) * later
    got = RK.decayed_row_sums(jnp.asarray(values), jnp.asarray(decay), jnp.asarray(t1), n_cols)
    np.testing.assert_allclose(got, (values[:, :n_t] * direct).sum(1), rtol=1e-12, atol=1e-300)
    ones = RK.decayed_row_sums(None, jnp.asarray(decay), jnp.asarray(t1), n_cols)
    np.testing.assert_allclose(ones, direct.sum(1), rtol=1e-12)


MODEL_CASES = [
    ("static", {}, {}),
    ("static", {"noise": "known"}, {"known_sigma": True}),
    ("static", {"per_angle_mode": "auto"}, {}),
    ("static", {"per_angle_mode": "constant"}, {}),
    ("static", {"parameterization": "physical"}, {}),
    ("laminar_flow", {}, {}),
    ("laminar_flow", {"shear_convention": "reference"}, {}),
    ("two_component", {}, {}),
]


@pytest.mark.parametrize("physics, model_opts, sim_opts", MODEL_CASES)
def test_model_potential_on_rows_equals_points(physics, model_opts, sim_opts):
    """NumPyro potential (prior, Jacobian, likelihood) in unconstrained space, rows vs points."""
    data, truth = xpcs.simulate(physics, n_angles=3, n_t=45, seed=1, **sim_opts)
    m_rows = xpcs.XPCSModel.create(physics, data.n_phi, **model_opts)
    m_pts = m_rows.with_points()
    rows, kwargs = xpcs.prepare(m_rows, data)
    pts, _ = xpcs.prepare(m_pts, data)
    physical = dict(truth)
    if m_rows.scaling_mode == "averaged":
        physical.update(contrast=np.mean(truth["contrast"]), offset=np.mean(truth["offset"]))
    z = unconstrain_fn(m_pts, (), {**kwargs, **pts},
                       xpcs.to_site_values(m_rows, physical, data.t))
    rng = np.random.default_rng(4)
    z = {k: v + 0.3 * rng.normal(size=np.shape(v)) for k, v in z.items()}
    _assert_same(lambda z, *_: potential_energy(m_rows, (), {**kwargs, **rows}, z),
                 lambda z, *_: potential_energy(m_pts, (), {**kwargs, **pts}, z), (z, 0.0, 0.0))


def test_tempered_row_shards_multiply_back_to_the_posterior():
    """Invariant 1 on rows: interleaved shards, padded rows masked, prior^(1/K)."""
    data, truth = xpcs.simulate("static", n_angles=2, n_t=40, seed=2)
    model = xpcs.XPCSModel.create("static", data.n_phi)
    rows, kwargs = xpcs.prepare(model, data)
    n = rows["c2"].shape[0]
    layout = assign_points(n, 5, "interleaved")
    assert not layout.mask.all()  # 78 rows: padding is exercised
    z = unconstrain_fn(model, (), {**kwargs, **rows},
                       xpcs.to_site_values(model, truth, data.t))
    observed = observed_site_names(model, {**kwargs, **rows})
    total = 0.0
    for k in range(5):
        shard = tempered_model(model, 0.2, observed, jnp.asarray(layout.mask[k]))
        total += float(potential_energy(shard, (), {**kwargs, **shard_arrays(rows, layout, k)}, z))
    full = float(potential_energy(model, (), {**kwargs, **rows}, z))
    assert total == pytest.approx(full, rel=1e-12)


def test_interleaved_rows_balance_points_across_shards():
    data, _ = xpcs.simulate("static", n_angles=3, n_t=200, seed=0)
    model = xpcs.XPCSModel.create("static", data.n_phi)
    rows, kwargs = xpcs.prepare(model, data)
    layout = assign_points(rows["c2"].shape[0], 8, "interleaved", strata=rows["phi_idx"])
    counts = model.observation_counts(rows, kwargs)
    per_shard = np.where(layout.mask, counts[layout.indices], 0).sum(1)
    assert per_shard.sum() == data.num_points
    assert per_shard.max() / per_shard.min() < 1.01
    for k in range(8):  # every shard spans all angles and the whole time range
        mine = layout.indices[k][layout.mask[k]]
        assert set(rows["phi_idx"][mine]) == {0, 1, 2}
        assert rows["t1_idx"][mine].min() < 8 and rows["t1_idx"][mine].max() > 190


def test_row_layout_holds_the_upper_triangle_once():
    data, _ = xpcs.simulate("static", n_angles=2, n_t=37, seed=5, known_sigma=True)
    rows = RL.row_arrays(data, known_noise=True)
    assert rows["c2"].shape == (2 * 36, RL.padded_columns(37))
    back, pooled = RL.rows_to_points(rows, data.n_t), xpcs.pool(data)
    for key in ("phi_idx", "t1_idx", "t2_idx"):
        np.testing.assert_array_equal(back[key], pooled[key])
    np.testing.assert_allclose(back["c2"], pooled["c2"], rtol=1e-15)
    np.testing.assert_allclose(back["sigma"], pooled["sigma"], rtol=1e-15)
    assert RL.row_observations(rows, data.n_t).sum() == data.num_points
