"""Least-squares warm start: recovers truth, returns valid NUTS initial values."""

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from numpyro.infer.util import log_density  # noqa: E402

from shardmc.errors import ShardMCInputError  # noqa: E402
from shardmc.xpcs import XPCSModel, prepare, simulate, warm_start  # noqa: E402

TRUTH = {"D0": 1.0e4, "alpha": -0.3, "D_offset": 500.0}


@pytest.fixture(scope="module")
def static_fit():
    data, truth = simulate("static", TRUTH, n_angles=3, n_t=50, noise=1e-4, seed=4,
                           contrast=[0.25, 0.3, 0.35], offset=[1.0, 1.02, 0.98])
    model = XPCSModel.create("static", 3, parameterization="physical")
    return data, truth, model, warm_start(model, data)


def test_recovers_truth_on_small_static_dataset(static_fit):
    _, truth, _, ws = static_fit
    assert ws.success
    for name in ("D0", "alpha", "D_offset"):
        z = (ws.physical[name] - truth[name]) / ws.std_errors[name]
        assert abs(z) < 4.0, (name, ws.physical[name], ws.std_errors[name])
    assert ws.physical["D0"] == pytest.approx(1.0e4, rel=0.01)
    assert ws.physical["alpha"] == pytest.approx(-0.3, abs=0.005)
    np.testing.assert_allclose(ws.physical["contrast"], truth["contrast"], atol=1e-3)
    np.testing.assert_allclose(ws.physical["offset"], truth["offset"], atol=1e-3)
    np.testing.assert_allclose(ws.physical["sigma"], 1e-4, rtol=0.1)


def test_init_values_are_sample_sites_with_finite_density(static_fit):
    data, _, model, ws = static_fit
    assert set(ws.init_values) == set(model.sampled_sites)
    points, kwargs = prepare(model, data)
    lp, tr = log_density(model, (), {**kwargs, **points}, ws.init_values)
    assert np.isfinite(float(lp))
    assert float(tr["D0"]["value"]) == pytest.approx(ws.physical["D0"], rel=1e-12)
    np.testing.assert_allclose(tr["sigma"]["value"], ws.physical["sigma"], rtol=1e-12)
    assert all(np.all(np.isfinite(v)) and np.all(v > 0) for v in ws.std_errors.values())


def test_laplace_covariance_is_an_inverse_mass_matrix(static_fit):
    """Layout = ravel_pytree order of the unconstrained sites; SPD; D0's marginal sd from it
    matches the least-squares standard error (delta method through the log and logit)."""
    _, _, model, ws = static_fit
    names = [name for name, _ in ws.unconstrained_sites]
    assert names == sorted(model.sampled_sites)
    cov = ws.unconstrained_covariance
    dim = sum(int(np.prod(shape)) for _, shape in ws.unconstrained_sites)
    assert cov.shape == (dim, dim)
    np.testing.assert_allclose(cov, cov.T)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    i = names.index("log_D0")
    offset = sum(int(np.prod(shape)) for _, shape in ws.unconstrained_sites[:i])
    p = (np.log(ws.physical["D0"]) - np.log(100.0)) / np.log(1e3)  # logit coordinate slope
    sd_log_d0 = np.sqrt(cov[offset, offset]) * np.log(1e3) * p * (1 - p)
    assert sd_log_d0 * ws.physical["D0"] == pytest.approx(ws.std_errors["D0"], rel=0.1)


def test_constant_mode_known_noise_and_subsampling():
    data, _ = simulate("static", TRUTH, n_angles=2, n_t=40, noise=1e-3, seed=1,
                           known_sigma=True)
    model = XPCSModel.create("static", 2, per_angle_mode="constant", noise="known")
    ws = warm_start(model, data, max_points=500, seed=3, laplace=False)
    assert ws.unconstrained_covariance is None
    assert ws.num_points == 500
    assert set(ws.init_values) == set(model.sampled_sites) == {"J_rates"}
    assert "contrast" not in ws.physical and "sigma" not in ws.physical
    assert np.isfinite(ws.cost) and ws.physical["D0"] > 0


def test_initial_values_and_bounds_are_respected():
    data, _ = simulate("static", TRUTH, n_angles=2, n_t=30, noise=1e-3, seed=2)
    model = XPCSModel.create("static", 2, priors={"alpha": (-0.2, 0.5)})
    ws = warm_start(model, data, initial={"D0": 3.0e3, "alpha": 0.0}, laplace=False)
    assert -0.2 < ws.physical["alpha"] < 0.5  # truth −0.3 lies outside: fit stays in bounds
    prior = model.block_prior("J_rates", data.t)  # the narrowed bounds hold in the block too
    (log_d0, alpha, _), _ = prior.to_site(ws.init_values["J_rates"])
    assert -0.2 < float(alpha) < 0.5  # kept INTERIOR_MARGIN inside the bounds
    assert float(alpha) == pytest.approx(ws.physical["alpha"], abs=1e-5)
    assert float(log_d0) == pytest.approx(np.log(ws.physical["D0"]), abs=1e-5)
    with pytest.raises(ShardMCInputError, match="unknown parameter"):
        warm_start(model, data, initial={"gamma_dot_0": 1e-3})


def test_rate_block_init_values_map_back_to_the_fit(static_fit):
    """Under parameterization="rates" the warm start's values land in the rate block site
    and the model's deterministic sites give back the least-squares physical values."""
    data, _, _, ws = static_fit
    model = XPCSModel.create("static", 3)
    init = warm_start(model, data, laplace=True)
    assert set(init.init_values) == set(model.sampled_sites)
    assert init.init_values["J_rates"].shape == (3,)
    points, kwargs = prepare(model, data)
    lp, tr = log_density(model, (), {**kwargs, **points}, init.init_values)
    assert np.isfinite(float(lp))
    for name in ("D0", "alpha", "D_offset"):
        assert float(tr[name]["value"]) == pytest.approx(float(init.physical[name]), rel=1e-9)
        assert float(init.physical[name]) == pytest.approx(float(ws.physical[name]), rel=1e-6)
    assert np.all(np.linalg.eigvalsh(init.unconstrained_covariance) > 0)


def test_two_component_starts_off_the_symmetric_saddle():
    """The table's two_component start (D0_ref = D0_sample) stops between the two
    labelings of the components (measured: cost 0.26675 against 0.26462, Δχ²/2 = 21);
    the split starts reach the lower basin and the warm start keeps the lowest cost."""
    from shardmc.xpcs.warmstart import COMPONENT_SPLITS, start_points

    data, truth = simulate("two_component", n_angles=3, n_t=60, seed=0, t0=0.1)
    model = XPCSModel.create("two_component", data.n_phi)
    starts = start_points(model, data)
    assert len(starts) == 1 + len(COMPONENT_SPLITS)
    assert starts[0]["D0_ref"] == starts[0]["D0_sample"]
    for start, split in zip(starts[1:], COMPONENT_SPLITS, strict=True):
        assert start["D0_ref"] / start["D0_sample"] == pytest.approx(split)
    assert len(start_points(model, data, initial={"D0_ref": 2e4})) == 1  # the user's start
    assert len(start_points(XPCSModel.create("static", 3), data)) == 1
    ws = warm_start(model, data, laplace=False)
    costs = np.array(ws.start_costs)
    assert ws.cost == costs.min()
    noise_var = 0.01**2  # the simulator's noise: cost/σ² is −log-likelihood up to a constant
    assert (costs[0] - ws.cost) / noise_var > 10  # the symmetric start is trapped
    at_truth = warm_start(model, data, laplace=False,
                          initial={k: truth[k] for k in model.parameter_names})
    assert abs(ws.cost - at_truth.cost) / noise_var < 2  # the true basin's depth
