"""XPCS NumPyro models: engine contract, sites, priors, parameterisation, masking."""

import jax

jax.config.update("jax_enable_x64", True)

import pickle  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import pytest  # noqa: E402
from numpyro import handlers  # noqa: E402
from numpyro.infer import Predictive  # noqa: E402
from numpyro.infer.util import log_density, potential_energy  # noqa: E402
from scipy import stats  # noqa: E402

from shardmc.core.tempering import temper  # noqa: E402
from shardmc.errors import ShardMCInputError  # noqa: E402
from shardmc.xpcs import (  # noqa: E402
    XPCSModel,
    estimate_scaling,
    fitted_c2,
    mean_c2,
    model_kwargs,
    prepare,
    simulate,
    to_site_values,
)
from shardmc.xpcs.models import DATA_KEYS, GEOMETRY_KEYS  # noqa: E402
from shardmc.xpcs.physics import PHYSICS_MODELS  # noqa: E402
from shardmc.xpcs.row_layout import ROW_KEYS, padded_columns, row_mask  # noqa: E402


@pytest.fixture(scope="module")
def small():
    return simulate("laminar_flow", n_angles=3, n_t=12, seed=3)


def trace(model, data):
    points, kwargs = prepare(model, data)
    return handlers.trace(handlers.seed(model, 0)).get_trace(**kwargs, **points), points, kwargs


@pytest.mark.parametrize("physics", PHYSICS_MODELS)
@pytest.mark.parametrize("mode", ["individual", "auto", "constant", "constant_averaged"])
@pytest.mark.parametrize("likelihood", ["rows", "points"])
def test_sites_and_contract(physics, mode, likelihood, small):
    data = small[0]
    model = XPCSModel.create(physics, data.n_phi, per_angle_mode=mode, likelihood=likelihood)
    tr, points, kwargs = trace(model, data)
    n = data.num_points if likelihood == "points" else data.n_phi * (data.n_t - 1)
    assert set(points) == set(DATA_KEYS if likelihood == "points" else ROW_KEYS)
    assert all(v.shape[0] == n for v in points.values())
    assert model.observation_counts(points, kwargs).sum() == data.num_points
    assert set(GEOMETRY_KEYS) <= set(kwargs)
    assert all(isinstance(v, np.ndarray) for v in kwargs.values())
    latent = tuple(k for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"])
    observed = [k for k, s in tr.items() if s["type"] == "sample" and s["is_observed"]]
    deterministic = {k for k, s in tr.items() if s["type"] == "deterministic"}
    assert latent == model.sampled_sites
    assert observed == ["c2"]
    assert tr["c2"]["fn"].batch_shape == (n,)
    assert deterministic == set(model.deterministic_sites)
    physical = set(model.parameter_names)
    assert physical <= set(latent) | deterministic  # users see every physical name
    if mode.startswith("constant"):
        assert "contrast" not in latent and {"contrast", "offset"} <= deterministic


def test_site_names_static_default():
    model = XPCSModel.create("static", 3)
    assert model.sampled_sites == ("J_rates", "contrast", "offset", "log_sigma")
    assert model.site_shapes["J_rates"] == (3,)
    assert model.deterministic_sites == ("D0", "alpha", "D_offset", "sigma")
    assert XPCSModel.create("static", 3, noise="known").sampled_sites[-1] == "offset"
    physical = XPCSModel.create("static", 3, parameterization="physical")
    assert physical.sampled_sites == ("log_D0", "alpha", "D_offset", "contrast", "offset",
                                      "log_sigma")
    assert physical.deterministic_sites == ("D0", "sigma")
    assert tuple(XPCSModel.create("laminar_flow", 3).rate_blocks) == ("J_rates",
                                                                     "gamma_dot_rates")
    assert tuple(XPCSModel.create("two_component", 3).rate_blocks) == (
        "J_ref_rates", "J_sample_rates", "v_rates")
    # a block whose amplitude has a non-log prior keeps its parameters as separate sites
    uniform_d0 = XPCSModel.create("static", 3, priors={"D0": {"kind": "uniform"}})
    assert uniform_d0.rate_blocks == {} and "D0" in uniform_d0.sampled_sites
    with pytest.raises(ShardMCInputError, match="parameterization"):
        XPCSModel.create("static", 3, parameterization="log")


def test_auto_mode_averages_from_three_angles():
    assert XPCSModel.create("static", 2, per_angle_mode="auto").scaling_mode == "individual"
    assert XPCSModel.create("static", 3, per_angle_mode="auto").scaling_mode == "averaged"
    assert XPCSModel.create("static", 3, per_angle_mode="auto").site_shape("contrast") == ()


def test_model_is_hashable_picklable_and_jit_static(small):
    data = small[0]
    a = XPCSModel.create("static", 3, priors={"alpha": (-1.0, 1.0)})
    b = XPCSModel.create("static", 3, priors={"alpha": (-1.0, 1.0)})
    assert a == b and hash(a) == hash(b)
    assert pickle.loads(pickle.dumps(a)) == a
    points, kwargs = prepare(a, data)

    @jax.jit
    def run(z, points, kwargs):
        return potential_energy(a, (), {**kwargs, **points}, z)

    z = {"J_rates": jnp.array([0.0, -0.1, 1.0]), "contrast": jnp.zeros(3),
         "offset": jnp.zeros(3), "log_sigma": jnp.zeros(3)}
    assert np.isfinite(float(run(z, points, kwargs)))


def test_prior_overrides_and_errors():
    model = XPCSModel.create("static", 2, priors={
        "D0": {"kind": "log_normal", "loc": 5e3, "scale": 0.5},
        "alpha": (-1.0, 0.5),
        "D_offset": {"kind": "truncated_normal", "loc": 0.0, "scale": 100.0},
    })
    assert model.prior["D0"].kind == "log_normal"
    assert (model.prior["alpha"].lower, model.prior["alpha"].upper) == (-1.0, 0.5)
    with pytest.raises(ShardMCInputError, match="unknown parameter"):
        XPCSModel.create("static", 2, priors={"gamma_dot_0": (0.1, 0.2)})
    with pytest.raises(ShardMCInputError, match="outside the bounds"):
        XPCSModel.create("static", 2, priors={"D0": {"kind": "log_normal", "loc": 1.0,
                                                     "scale": 1.0}})
    with pytest.raises(ShardMCInputError, match="lower > 0"):
        XPCSModel.create("static", 2, priors={"D0": (-1.0, 10.0)})
    with pytest.raises(ShardMCInputError, match="per_angle_mode"):
        XPCSModel.create("static", 2, per_angle_mode="fourier")
    with pytest.raises(ShardMCInputError, match="shear_convention"):
        XPCSModel.create("laminar_flow", 2, shear_convention="pi")


def test_log_density_equals_table_prior_plus_likelihood(small):
    """Sampling log D0 and log sigma gives exactly the table's log-uniform priors."""
    data = small[0]
    model = XPCSModel.create("static", 3, parameterization="physical", likelihood="points")
    points, kwargs = prepare(model, data)
    phys = {"D0": 8.0e3, "alpha": -0.4, "D_offset": 150.0, "contrast": np.array([0.3, 0.2, 0.25]),
            "offset": np.array([1.0, 1.01, 0.99]), "sigma": np.array([0.01, 0.02, 0.015])}
    sites = to_site_values(model, phys)
    assert sites["log_D0"] == pytest.approx(np.log(8.0e3))
    lp, tr = log_density(model, (), {**kwargs, **points}, sites)
    assert float(tr["D0"]["value"]) == pytest.approx(8.0e3)
    mean = np.asarray(mean_c2(model, phys, points, kwargs))
    sd = phys["sigma"][points["phi_idx"]]
    expected = (
        -np.log(4.0)  # alpha ~ U(-2, 2)
        - np.log(np.log(1e5 / 100.0))  # log D0 ~ U(log 100, log 1e5)
        - np.log(2e5)  # D_offset ~ U(-1e5, 1e5)
        - 3 * np.log(1.0)  # contrast ~ U(0, 1)
        - 3 * np.log(1.0)  # offset ~ U(0.5, 1.5)
        - 3 * np.log(np.log(1.0 / 1e-6))  # log sigma ~ U(log 1e-6, 0)
        + stats.norm.logpdf(points["c2"], mean, sd).sum()
    )
    assert float(lp) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("physics", PHYSICS_MODELS)
def test_rate_blocks_carry_the_same_prior_times_their_jacobian(physics, small):
    """At the same physical values, the rates model's joint density is the physical
    model's plus each block's log |det ∂(log A, p, B)/∂u|: the same posterior in other
    coordinates."""
    data = small[0]
    rates_model = XPCSModel.create(physics, 3)
    physical_model = XPCSModel.create(physics, 3, parameterization="physical")
    tr, points, kwargs = trace(rates_model, data)
    inputs = {**kwargs, **points}
    values = {n: tr[n]["value"] for n in physical_model._global_names()}  # a prior draw...
    values.update(sigma=np.full(3, 0.01), contrast=np.full(3, 0.3))  # ...with usable noise
    lp_rates, _ = log_density(rates_model, (), inputs, to_site_values(rates_model, values,
                                                                       data.t))
    lp_phys, _ = log_density(physical_model, (), inputs, to_site_values(physical_model,
                                                                        values))
    sites = to_site_values(rates_model, values, data.t)
    log_det = sum(float(rates_model.block_prior(site, data.t).to_site(sites[site])[1])
                  for site in rates_model.rate_blocks)
    assert float(lp_rates) == pytest.approx(float(lp_phys) + log_det, rel=1e-12, abs=1e-8)


def test_prior_draws_follow_the_table():
    data, _ = simulate("laminar_flow", n_angles=2, n_t=6, seed=0)
    model = XPCSModel.create("laminar_flow", 2)
    rows, kwargs = prepare(model, data)
    rows = {**rows, "c2": None}
    draws = Predictive(model, num_samples=4000)(jax.random.key(1), **kwargs, **rows)
    d0, g0 = np.asarray(draws["D0"]), np.asarray(draws["gamma_dot_0"])
    assert stats.kstest(np.log(d0), stats.uniform(np.log(100.0), np.log(1e3)).cdf).pvalue > 1e-3
    lo, hi = np.log(1e-6), np.log(0.5)
    assert stats.kstest(np.log(g0), stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
    assert stats.kstest(np.asarray(draws["alpha"]), stats.uniform(-2, 4).cdf).pvalue > 1e-3
    assert draws["c2"].shape == (4000, *np.shape(rows["c2_mean"]), padded_columns(data.n_t))


@pytest.mark.parametrize("noise", ["sampled", "known"])
def test_predictive_on_rows_draws_the_point_model(noise):
    """At fixed parameters, c2 drawn on the rows has the point model's mean and sd at
    every data entry (Monte Carlo: 4 standard errors over 2 000 draws)."""
    data, truth = simulate("static", n_angles=2, n_t=9, seed=1, known_sigma=noise == "known")
    model = XPCSModel.create("static", 2, noise=noise, parameterization="physical")
    rows, kwargs = prepare(model, data)
    sites = to_site_values(model, truth)
    n = 2000
    fixed = {k: np.broadcast_to(v, (n, *np.shape(v))) for k, v in sites.items()}
    draws = Predictive(model, posterior_samples=fixed)(jax.random.key(2), **kwargs,
                                                       **{**rows, "c2": None})["c2"]
    mask = row_mask(rows["t1_idx"], data.n_t, draws.shape[-1])
    r, col = np.nonzero(mask)
    phi, t1 = rows["phi_idx"][r], rows["t1_idx"][r]
    expected = fitted_c2(model, truth, data)[phi, t1, col]
    sd = data.sigma[phi, t1, col] if noise == "known" else np.asarray(truth["sigma"])[phi]
    at_data = np.asarray(draws)[:, r, col]
    assert np.all(np.abs(at_data.mean(axis=0) - expected) < 4 * sd / np.sqrt(n))
    ratio = at_data.std(axis=0) / sd
    assert np.all(np.abs(ratio - 1) < 4 / np.sqrt(2 * n))


def test_masked_points_drop_out_of_the_likelihood(small):
    """The engine masks padded points along the c2 batch axis (shardmc.core.tempering)."""
    data = small[0]
    model = XPCSModel.create("static", 3, per_angle_mode="constant",
                             parameterization="physical", likelihood="points")
    points, kwargs = prepare(model, data)
    n = data.num_points
    keep = np.arange(n) < n - 7
    sites = {"alpha": 0.2, "log_D0": 9.0, "D_offset": 10.0, "log_sigma": np.full(3, -4.0)}

    def masked_lp(mask):
        with temper(prior_scale=1.0, observed_sites=frozenset({"c2"}), point_mask=mask):
            return float(log_density(model, (), {**kwargs, **points}, sites)[0])

    sub = {k: v[keep] for k, v in points.items()}
    full_sub = float(log_density(model, (), {**kwargs, **sub}, sites)[0])
    assert masked_lp(jnp.asarray(keep)) == pytest.approx(full_sub, rel=1e-12)


def test_noise_modes(small):
    data = small[0]
    known = simulate("static", n_angles=3, n_t=12, seed=3, known_sigma=True)[0]
    model = XPCSModel.create("static", 3, noise="known", likelihood="points")
    with pytest.raises(ShardMCInputError, match="sigma"):
        prepare(model, data)
    with pytest.raises(ShardMCInputError, match="sigma"):
        prepare(XPCSModel.create("static", 3, noise="known"), data)
    tr, points, _ = trace(model, known)
    assert "sigma" in points and "log_sigma" not in tr
    np.testing.assert_allclose(np.asarray(tr["c2"]["fn"].scale), points["sigma"])
    sampled = XPCSModel.create("static", 3, likelihood="points")
    pts, kw = prepare(sampled, known)
    assert "sigma" not in pts  # dropped for the sampled-noise model
    with pytest.raises(ShardMCInputError, match="noise='sampled'"):
        handlers.seed(sampled, 0)(**kw, **pts, sigma=np.ones(data.num_points))
    rows_known = XPCSModel.create("static", 3, noise="known")
    tr, rows, kw = trace(rows_known, known)
    assert {"weight", "weight_sum", "log_sigma"} <= set(rows) and "log_sigma" not in tr
    rows_sampled = XPCSModel.create("static", 3)
    with pytest.raises(ShardMCInputError, match="noise='sampled'"):
        handlers.seed(rows_sampled, 0)(**kw, **rows)
    with pytest.raises(ShardMCInputError, match="weight"):
        handlers.seed(rows_known, 0)(**kw, **{k: v for k, v in rows.items() if k != "weight"})


def test_constant_modes_use_quantile_scaling(small):
    data = small[0]
    est = estimate_scaling(data)
    kw = model_kwargs(XPCSModel.create("static", 3, per_angle_mode="constant"), data)
    np.testing.assert_allclose(kw["contrast_fixed"], est.contrast)
    kw = model_kwargs(XPCSModel.create("static", 3, per_angle_mode="constant_averaged"), data)
    np.testing.assert_allclose(kw["offset_fixed"], np.full(3, est.offset.mean()))
    with pytest.raises(ShardMCInputError, match="expects 2 angles"):
        model_kwargs(XPCSModel.create("static", 2), data)


@pytest.mark.parametrize("physics", PHYSICS_MODELS)
def test_fitted_c2_matches_noiseless_simulation(physics):
    data, truth = simulate(physics, n_angles=3, n_t=15, noise=0.0, seed=0)
    model = XPCSModel.create(physics, 3)
    fit = fitted_c2(model, truth, data)
    off = ~np.eye(15, dtype=bool)
    np.testing.assert_allclose(fit[:, off], data.c2[:, off], rtol=1e-13)


def test_potential_gradient_finite_in_unconstrained_space():
    """What NUTS sees: potential and gradient finite at 300 unconstrained points per physics,
    z ~ Normal(0, 4) per coordinate (reaching within ~1e-5 of every bound)."""
    rng = np.random.default_rng(5)
    for physics in PHYSICS_MODELS:
        data, _ = simulate(physics, n_angles=3, n_t=10, seed=2)
        model = XPCSModel.create(physics, 3)
        points, kwargs = prepare(model, data)
        kw = {**kwargs, **points}
        z = {k: 4.0 * rng.standard_normal((300, *shape))
             for k, shape in model.site_shapes.items()}
        vg = jax.jit(jax.vmap(jax.value_and_grad(lambda zz, kw=kw, model=model:
                                                  potential_energy(model, (), kw, zz))))
        values, grads = vg(z)
        assert np.all(np.isfinite(np.asarray(values))), physics
        assert all(np.all(np.isfinite(np.asarray(g))) for g in grads.values()), physics


def test_normal_site_is_a_single_vectorised_normal(small):
    tr, _, _ = trace(XPCSModel.create("two_component", 3, likelihood="points"), small[0])
    assert isinstance(tr["c2"]["fn"], dist.Normal)
    tr, rows, _ = trace(XPCSModel.create("two_component", 3), small[0])
    assert isinstance(tr["c2"]["fn"], dist.Unit)  # a factor of the rows' log densities
    assert tr["c2"]["fn"].batch_shape == (rows["c2"].shape[0],)
