"""Rate-space consensus: the rate map, its inverse and Jacobians, and the recombination."""

from types import SimpleNamespace

import numpy as np
import pytest
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from shardmc.xpcs import XPCSModel
from shardmc.xpcs.rates import (
    invert_rates,
    log_abs_det_rates,
    rate_space_consensus,
    rates,
    reference_times,
    to_physical,
    to_unconstrained,
)

TIMES = reference_times(np.arange(60) * 0.1)


def test_reference_times_span_the_window_geometrically():
    assert TIMES[-1] == pytest.approx(5.9)
    assert TIMES[1] / TIMES[0] == pytest.approx(TIMES[2] / TIMES[1])


@pytest.mark.parametrize("exponent", [-1.5, -0.3, 0.4, 1.2])
def test_invert_rates_round_trips(exponent):
    amp, off = np.array([1.0e4, 3.0e2]), np.array([500.0, -20.0])
    ex = np.full(2, exponent)
    back = invert_rates(rates(amp, ex, off, TIMES), TIMES)
    np.testing.assert_allclose(back[0], amp, rtol=1e-9)
    np.testing.assert_allclose(back[1], ex, rtol=1e-9)
    np.testing.assert_allclose(back[2], off, rtol=1e-9, atol=1e-7)


def test_invert_rates_is_nan_where_no_power_law_fits():
    values = np.array([[1.0, 2.0, 1.5]])  # rises then falls: no real exponent
    assert np.isnan(invert_rates(values, TIMES)[1]).all()


def test_log_abs_det_rates_matches_finite_differences():
    theta = np.array([1.0e4, -0.3, 500.0])
    h = np.array([1e-2, 1e-7, 1e-3])
    jac = np.empty((3, 3))
    for j in range(3):
        up, down = theta.copy(), theta.copy()
        up[j] += h[j]
        down[j] -= h[j]
        jac[:, j] = (rates(*up[:, None], TIMES) - rates(*down[:, None], TIMES))[0] / (2 * h[j])
    expected = np.log(abs(np.linalg.det(jac)))
    got = log_abs_det_rates(theta[:1], theta[1:2], TIMES)[0]
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", ["D0", "alpha", "D_offset", "sigma"])
def test_site_transforms_match_numpyro(name):
    model = XPCSModel.create("static", 3, parameterization="physical")
    spec = model.prior[name]
    log = name in ("D0", "sigma")
    lo, hi = (np.log(spec.lower), np.log(spec.upper)) if log else (spec.lower, spec.upper)
    bijection = biject_to(constraints.interval(lo, hi))
    y = np.array([-3.0, -0.2, 0.0, 1.7])
    site = np.asarray(bijection(y))
    theta, log_jac = to_physical(model, name, y)
    np.testing.assert_allclose(theta, np.exp(site) if log else site, rtol=1e-12)
    expected = np.asarray(bijection.log_abs_det_jacobian(y, site)) + (site if log else 0.0)
    np.testing.assert_allclose(log_jac, expected, rtol=1e-10)
    y_back, log_jac_back = to_unconstrained(model, name, theta)
    np.testing.assert_allclose(y_back, y, atol=1e-8)
    np.testing.assert_allclose(log_jac_back, log_jac, rtol=1e-8)
    assert np.isnan(to_unconstrained(model, name, np.array([spec.upper * 2 + 1]))[0]).all()


def _static_draws(rng, k, s, model):
    """Unconstrained shard draws (K, 1, S, d) around D0 = 1e4, alpha = -0.3, D_offset = 500."""
    coords = ["D_offset", "alpha", "contrast[0]", "contrast[1]", "contrast[2]", "log_D0",
              "log_sigma[0]", "log_sigma[1]", "log_sigma[2]", "offset[0]", "offset[1]",
              "offset[2]"]
    centre = {"D_offset": 500.0, "alpha": -0.3, "D0": 1.0e4, "contrast": 0.3, "offset": 1.0,
              "sigma": 0.01}
    y0 = np.array([to_unconstrained(model, c.split("[")[0].removeprefix("log_"),
                                    np.array([centre[c.split("[")[0].removeprefix("log_")]]))[0][0]
                   for c in coords])
    draws = y0 + 0.01 * rng.standard_normal((k, 1, s, len(coords)))
    return coords, draws


def test_single_shard_is_returned_unchanged_in_distribution():
    model = XPCSModel.create("static", 3, parameterization="physical")
    coords, draws = _static_draws(np.random.default_rng(0), 1, 2000, model)
    post = SimpleNamespace(coords=coords, shard_draws=draws, samples={})
    out = rate_space_consensus(post, model, np.arange(60) * 0.1)
    assert out.valid_fraction == 1.0 and out.importance_ess == pytest.approx(2000)
    direct = to_physical(model, "D0", draws[0, 0, :, coords.index("log_D0")])[0]
    assert np.median(out.samples["D0"]) == pytest.approx(np.median(direct), rel=1e-6)
    assert out.samples["contrast"].shape == (2000, 3)
    assert set(out.samples) == {"D0", "alpha", "D_offset", "contrast", "offset", "sigma"}


def test_consensus_of_identical_gaussian_shards_shrinks_by_sqrt_k():
    """K shards drawing independently from one narrow Gaussian: the combined sd is the
    shards' / sqrt(K) (the Jacobian weights are flat over so narrow a posterior)."""
    model = XPCSModel.create("static", 3, parameterization="physical")
    coords, draws = _static_draws(np.random.default_rng(1), 4, 4000, model)
    post = SimpleNamespace(coords=coords, shard_draws=draws, samples={})
    out = rate_space_consensus(post, model, np.arange(60) * 0.1)
    assert out.importance_ess > 0.9 * 4000
    sd1 = to_physical(model, "alpha", draws[0, 0, :, coords.index("alpha")])[0].std()
    assert out.samples["alpha"].std() == pytest.approx(sd1 / 2, rel=0.15)


def test_rate_parameterised_models_are_refused_with_a_pointer():
    model = XPCSModel.create("static", 3)
    post = SimpleNamespace(coords=["J_rates[0]"], shard_draws=np.zeros((2, 1, 4, 1)),
                           samples={})
    with pytest.raises(ValueError, match="method='consensus'"):
        rate_space_consensus(post, model, np.arange(60) * 0.1)
