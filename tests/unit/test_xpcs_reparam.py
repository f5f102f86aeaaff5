"""Rate-coordinate blocks (shardmc.xpcs.reparam): exact bijection, Jacobian, normalised prior."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from shardmc.xpcs import XPCSModel  # noqa: E402
from shardmc.xpcs.reparam import (  # noqa: E402
    SOFT_BOUND_SHARPNESS,
    reference_time,
    soft_interval,
    soft_interval_inverse,
)

T = np.arange(60) * 0.1  # frame times (s) of the synthetic data sets
INTERVAL = (-2.0, 5.0, 1.0, 0.5)  # lo, hi, center, scale


def _prior(physics="static", site="J_rates", priors=None):
    return XPCSModel.create(physics, 3, priors=priors).block_prior(site, T)


def test_soft_interval_is_a_smooth_bijection_onto_the_interval():
    u = jnp.linspace(-40.0, 40.0, 4001)
    x, log_dx = soft_interval(u, *INTERVAL)
    assert float(x.min()) >= INTERVAL[0] and float(x.max()) <= INTERVAL[1]
    assert bool(jnp.all(jnp.diff(x) >= 0))
    grad = jax.vmap(jax.grad(lambda v: soft_interval(v, *INTERVAL)[0]))(u)
    usable = grad > 1e-200
    np.testing.assert_allclose(np.log(grad[usable]), log_dx[usable], atol=1e-10)
    inside = (x > INTERVAL[0] + 1e-6) & (x < INTERVAL[1] - 1e-6)
    np.testing.assert_allclose(soft_interval_inverse(x, *INTERVAL)[inside], u[inside],
                               atol=1e-9)


def test_soft_interval_is_affine_in_the_bulk_whatever_the_bounds():
    """x = center + scale·u, independent of (lo, hi), at least 0.2 width from the ends (to
    e^(−0.2 k) relative): why a conditional interval that moves with earlier coordinates
    does not bend the coordinate (a logit of the position in the interval would)."""
    lo, hi, center, scale = INTERVAL
    u = jnp.linspace(-2.0, 4.0, 101)  # x from 0 to 3
    tolerance = 2 * np.exp(-0.2 * SOFT_BOUND_SHARPNESS)
    for shift in (0.0, -0.4, 0.3):
        x, log_dx = soft_interval(u, lo + shift, hi + shift, center, scale)
        np.testing.assert_allclose(x, center + scale * u, atol=tolerance * (hi - lo))
        np.testing.assert_allclose(log_dx, np.log(scale), atol=tolerance)


@pytest.mark.parametrize(("physics", "site"), [("static", "J_rates"),
                                               ("laminar_flow", "gamma_dot_rates"),
                                               ("two_component", "v_rates")])
def test_block_maps_round_trip_and_stay_in_the_box(physics, site):
    prior = XPCSModel.create(physics, 3).block_prior(site, T)
    u = prior.sample(jax.random.PRNGKey(0), (2000,))
    (log_a, p, b), log_det = prior.to_site(u)
    box = prior.box
    assert bool(jnp.all((log_a >= box.a_lo) & (log_a <= box.a_hi)))
    assert bool(jnp.all((p >= box.p_lo - 1e-9) & (p <= box.p_hi + 1e-9)))
    assert bool(jnp.all((b >= box.b_lo) & (b <= box.b_hi)))
    assert bool(jnp.all(jnp.isfinite(log_det)))
    np.testing.assert_allclose(prior.from_site(log_a, p, b), u, atol=1e-8)


def test_log_det_matches_the_jacobian_of_the_map():
    prior = _prior()
    u = prior.sample(jax.random.PRNGKey(1), (20,))

    def site(v):
        return jnp.stack(prior.to_site(v)[0])

    for v in u:
        expected = jnp.linalg.slogdet(jax.jacfwd(site)(v))[1]
        assert float(prior.to_site(v)[1]) == pytest.approx(float(expected), abs=1e-8)


@pytest.mark.parametrize("priors", [None, {"D0": {"kind": "log_normal", "loc": 1e4,
                                                   "scale": 1.0},
                                           "alpha": {"kind": "truncated_normal", "loc": 0.0,
                                                     "scale": 0.5}}])
def test_block_prior_is_the_box_prior_pushed_forward(priors):
    """Two checks of the pushed-forward density: it integrates to 1 (importance
    sampling, tolerance 5 Monte Carlo standard errors), and its own draws map back to the
    table's marginal priors (Kolmogorov–Smirnov)."""
    prior = _prior(priors=priors)
    u = np.asarray(prior.sample(jax.random.PRNGKey(2), (4000,)))
    mean, cov = u.mean(0), 4.0 * np.cov(u.T)
    z = np.random.default_rng(0).multivariate_normal(mean, cov, size=200_000,
                                                     method="cholesky")
    log_q = stats.multivariate_normal(mean, cov).logpdf(z)
    log_p = np.asarray(jax.jit(jax.vmap(prior.log_prob))(jnp.asarray(z)))
    w = np.exp(log_p - log_q)
    assert abs(w.mean() - 1.0) < 5 * w.std() / np.sqrt(len(w))
    (log_a, p, b), _ = prior.to_site(jnp.asarray(u))
    for draws, dist in zip((log_a, p, b), prior.priors, strict=True):
        cdf = np.asarray(jax.vmap(dist.cdf)(jnp.asarray(draws)))
        assert stats.kstest(cdf, "uniform").pvalue > 1e-3


def test_gradient_finite_far_into_the_tails():
    prior = _prior("laminar_flow", "gamma_dot_rates")
    u = jax.random.normal(jax.random.PRNGKey(3), (3000, 3)) * jnp.array([30.0, 30.0, 30.0])
    grads = jax.vmap(jax.grad(prior.log_prob))(u)
    assert bool(jnp.all(jnp.isfinite(grads)))


def test_reference_time_is_inside_the_data_window():
    t_r = float(reference_time(T))
    assert T[-1] / 20 < t_r < T[-1]
