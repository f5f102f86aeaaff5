"""XPCS physics kernels: closed forms, discretisation order, symmetry, reductions, gradients."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.scipy.stats import norm  # noqa: E402

from shardmc.xpcs import physics as P  # noqa: E402
from shardmc.xpcs.data import upper_indices  # noqa: E402
from shardmc.xpcs.parameters import PARAMETER_TABLE, model_parameter_names  # noqa: E402
from shardmc.xpcs.synthetic import DEFAULT_TRUTH  # noqa: E402

Q, GAP, DT = P.DEFAULT_Q, P.DEFAULT_GAP, P.DEFAULT_DT
PHI = np.array([-30.0, 0.0, 45.0, 90.0])


def geometry(n_t=40, dt=DT, phi=PHI):
    return P.Geometry(jnp.asarray(dt * np.arange(n_t)), dt, Q, GAP, jnp.asarray(phi))


def all_pairs(n_phi, n_t):
    """Every (phi, t1, t2) including both triangles and the diagonal."""
    g = np.meshgrid(np.arange(n_phi), np.arange(n_t), np.arange(n_t), indexing="ij")
    return P.PointIndex(*(jnp.asarray(a.ravel()) for a in g))


def test_static_alpha_zero_matches_closed_form():
    geo = geometry()
    params = {"D0": 2.0e4, "alpha": 0.0, "D_offset": 3.0e3}
    contrast, offset = jnp.array([0.2, 0.3, 0.25, 0.4]), jnp.array([1.0, 1.01, 0.99, 1.02])
    c2 = np.asarray(P.c2_matrix("static", params, contrast, offset, geo))
    t = np.asarray(geo.t)
    lag = np.abs(t[None, :] - t[:, None])
    # DESIGN.md literally: exp(−q² ∫J dt) is the squared g1, no extra factor 2
    expected = (np.asarray(offset)[:, None, None] + np.asarray(contrast)[:, None, None]
                * np.exp(-Q**2 * (params["D0"] + params["D_offset"]) * lag)[None])
    np.testing.assert_allclose(c2, expected, rtol=1e-13, atol=1e-15)


def test_laminar_without_shear_equals_static():
    geo = geometry()
    idx = all_pairs(len(PHI), 40)
    base = {"D0": 1.0e4, "alpha": -0.7, "D_offset": 200.0}
    lam = {**base, "gamma_dot_0": 0.0, "beta": 0.3, "gamma_dot_offset": 0.0, "phi0": 3.0}
    for convention in P.SHEAR_CONVENTIONS:
        np.testing.assert_allclose(
            P.correlation_term("laminar_flow", lam, geo, idx, shear_convention=convention),
            P.correlation_term("static", base, geo, idx), rtol=1e-14)


@pytest.mark.parametrize("convention", P.SHEAR_CONVENTIONS)
def test_constant_shear_matches_closed_form(convention):
    geo = geometry(n_t=30)
    idx = all_pairs(len(PHI), 30)
    gdot, phi0 = 3.0e-4, 4.0
    params = {"D0": 1.0e4, "alpha": 0.0, "D_offset": 0.0, "gamma_dot_0": gdot, "beta": 0.0,
              "gamma_dot_offset": 0.0, "phi0": phi0}
    term = np.asarray(P.correlation_term("laminar_flow", params, geo, idx,
                                         shear_convention=convention))
    t = np.asarray(geo.t)
    lag = np.abs(t[np.asarray(idx.t2_idx)] - t[np.asarray(idx.t1_idx)])
    x = 0.5 * Q * GAP * np.cos(np.deg2rad(phi0 - PHI[np.asarray(idx.phi_idx)])) * gdot * lag
    # np.sinc(z) = sin(πz)/(πz): published sinc²(x) = np.sinc(x/π)²,
    # reference (homodyne 2.x) sinc(x/π)⁴ = np.sinc(x/π²)⁴
    shear = np.sinc(x / np.pi) ** 2 if convention == "published" else np.sinc(x / np.pi**2) ** 4
    expected = np.exp(-Q**2 * 1.0e4 * lag) * shear
    np.testing.assert_allclose(term, expected, rtol=1e-11, atol=1e-15)


def test_trapezoid_error_is_second_order():
    """∫_1^3 t^α dt: the cumulative trapezoid error falls ~4x per halving of dt."""
    for alpha in (-1.5, -0.5, 0.7, 2.0):
        exact = (3.0 ** (alpha + 1) - 1.0) / (alpha + 1)
        errors = []
        for dt in (0.1, 0.05, 0.025, 0.0125):
            t = jnp.asarray(0.5 + dt * np.arange(round(2.5 / dt) + 1))
            c = jax.jit(P.cumulative_trapezoid)(t**alpha, t)
            i1, i2 = round(0.5 / dt), round(2.5 / dt)
            errors.append(abs(float(P.interval_integral(c, jnp.array(i1), jnp.array(i2))) - exact))
        ratios = np.array(errors[:-1]) / np.array(errors[1:])
        assert np.all((ratios > 3.8) & (ratios < 4.2)), (alpha, ratios)


def test_kernel_integral_matches_power_law_through_decay():
    """−log(term)/q² of the static kernel is the trapezoid ∫J, converging at O(dt²)."""
    errors = []
    for dt in (0.1, 0.05, 0.025):
        n_t = round(4.0 / dt) + 1
        geo = geometry(n_t=n_t, dt=dt, phi=np.array([0.0]))
        idx = P.PointIndex(jnp.array([0]), jnp.array([round(1.0 / dt)]),
                           jnp.array([n_t - 1]))
        term = jax.jit(lambda p, geo=geo, idx=idx: P.correlation_term("static", p, geo, idx))(
            {"D0": 1.0e4, "alpha": 0.5, "D_offset": 0.0})
        integral = -np.log(float(term[0])) / Q**2
        errors.append(abs(integral - 1.0e4 * (4.0**1.5 - 1.0) / 1.5))
    assert errors[0] / errors[1] > 3.8 and errors[1] / errors[2] > 3.8


@pytest.mark.parametrize("physics", P.PHYSICS_MODELS)
def test_symmetric_in_t1_t2(physics):
    geo = geometry()
    idx = all_pairs(len(PHI), 40)
    swapped = P.PointIndex(idx.phi_idx, idx.t2_idx, idx.t1_idx)
    params = DEFAULT_TRUTH[physics] | ({"v_offset": -20.0} if physics == "two_component" else {})
    a = P.correlation_term(physics, params, geo, idx)
    b = P.correlation_term(physics, params, geo, swapped)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.all(np.isfinite(np.asarray(a)))


def _homodyne_from(het):
    return {"D0": het["D0"], "alpha": het["alpha"], "D_offset": het["D_offset"]}


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_heterodyne_reduces_to_homodyne(fraction):
    """f_s ≡ 0: only the reference component remains (homodyne static with the _ref
    parameters); f_s ≡ 1: only the sample component."""
    geo = geometry()
    idx = all_pairs(len(PHI), 40)
    het = {**DEFAULT_TRUTH["two_component"], "alpha_ref": -0.4, "D_offset_ref": 300.0,
           "alpha_sample": 0.6, "D_offset_sample": -50.0, "f0": 0.0, "f1": 2.0,
           "f3": fraction}
    component = "ref" if fraction == 0.0 else "sample"
    static = {k: het[f"{k}_{component}"] for k in ("D0", "alpha", "D_offset")}
    np.testing.assert_allclose(P.correlation_term("two_component", het, geo, idx),
                               P.correlation_term("static", static, geo, idx), rtol=1e-13)


@pytest.mark.parametrize("shift", [-50.0, -10.0, 10.0])
def test_fraction_sees_f0_and_f2_only_through_their_product(shift):
    """f_s depends on (f0, f2) only through f0·exp(−f1 f2): c2 is unchanged along the
    ridge (f0, f2) → (f0·e^{f1 s}, f2 + s), an exact flat direction of the likelihood
    (docs/xpcs.md, "two_component: why its shards fail")."""
    geo = geometry()
    idx = all_pairs(len(PHI), 40)
    truth = DEFAULT_TRUTH["two_component"]
    moved = {**truth, "f0": truth["f0"] * np.exp(truth["f1"] * shift), "f2": truth["f2"] + shift}
    np.testing.assert_allclose(P.correlation_term("two_component", moved, geo, idx),
                               P.correlation_term("two_component", truth, geo, idx),
                               rtol=1e-12, atol=1e-15)


def test_sinc_values_and_gradient_near_zero():
    x = jnp.array([0.0, 1e-9, -1e-5, 1e-4, 0.3, -2.0, 40.0])
    np.testing.assert_allclose(P.sinc(x), np.sinc(np.asarray(x) / np.pi), rtol=1e-14)
    grad = jax.jit(jax.vmap(jax.grad(P.sinc)))(x)
    xs = np.asarray(x)[3:]
    np.testing.assert_allclose(grad[3:], (np.cos(xs) - np.sin(xs) / xs) / xs, rtol=1e-9)
    assert float(grad[0]) == 0.0 and np.all(np.isfinite(np.asarray(grad)))
    fwd = jax.jit(jax.jacfwd(P.sinc))(x)
    np.testing.assert_allclose(np.diagonal(fwd), grad, rtol=1e-14)


def test_rate_floored_at_half_dt_for_negative_alpha():
    geo = geometry(n_t=5, phi=np.array([0.0]))
    params = {"D0": 1.0e3, "alpha": -2.0, "D_offset": 0.0}
    idx = P.PointIndex(jnp.array([0]), jnp.array([0]), jnp.array([1]))
    term = float(P.correlation_term("static", params, geo, idx)[0])
    rate = 1.0e3 * np.array([(DT / 2) ** -2.0, DT**-2.0])  # J(0) evaluated at t = dt/2
    assert term == pytest.approx(np.exp(-Q**2 * 0.5 * DT * rate.sum()), rel=1e-13)


def test_cost_is_linear_no_points_by_frames_intermediate():
    """The kernel never builds an (n_points, n_t) array: cost O(n_t + points)."""
    n_t, n = 300, 7000
    geo = geometry(n_t=n_t)
    rng = np.random.default_rng(0)
    t1 = rng.integers(0, n_t - 1, n)
    idx = P.PointIndex(jnp.asarray(rng.integers(0, len(PHI), n)), jnp.asarray(t1),
                       jnp.asarray(t1 + 1))
    for physics in P.PHYSICS_MODELS:
        fn = lambda p, physics=physics: jnp.sum(P.correlation_term(physics, p, geo, idx))  # noqa: E731
        jaxpr = jax.make_jaxpr(jax.value_and_grad(fn))(DEFAULT_TRUTH[physics])
        sizes = [int(np.prod(v.aval.shape)) for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars
                 if hasattr(v.aval, "shape")]
        assert max(sizes) <= 4 * max(n, n_t), physics


def _random_params(physics, size, rng, corners=False):
    out = {}
    for name in model_parameter_names(physics):
        row = PARAMETER_TABLE[name]
        if corners:
            out[name] = np.where(rng.random(size) < 0.5, row.lower, row.upper)
        elif row.prior == "log_uniform":
            out[name] = np.exp(rng.uniform(np.log(row.lower), np.log(row.upper), size))
        else:
            out[name] = rng.uniform(row.lower, row.upper, size)
    for name in ("contrast", "offset", "sigma"):
        row = PARAMETER_TABLE[name]
        lo = max(row.lower, 1e-3) if name != "offset" else row.lower
        out[name] = rng.uniform(lo, row.upper, (size, 3))
    return out


@pytest.mark.parametrize("physics", P.PHYSICS_MODELS)
def test_loglik_gradient_finite_over_bound_box(physics):
    """1 000 random draws inside the bounds plus 200 random corners: finite value and grad."""
    n_t = 30
    geo = P.Geometry(jnp.asarray(1.0 * np.arange(n_t)), 1.0, Q, GAP, jnp.array([0.0, 60.0, 120.0]))
    pidx, t1, t2 = upper_indices(3, n_t)
    idx = P.PointIndex(*(jnp.asarray(a) for a in (pidx, t1, t2)))
    c2 = jnp.asarray(1.0 + 0.2 * np.random.default_rng(1).random(pidx.size))

    def loglik(p):
        mean = P.c2_mean(physics, p, p["contrast"], p["offset"], geo, idx)
        return jnp.sum(norm.logpdf(c2, mean, p["sigma"][idx.phi_idx]))

    rng = np.random.default_rng(7)
    inside, corners = _random_params(physics, 1000, rng), _random_params(physics, 200, rng, True)
    draws = {k: np.concatenate([inside[k], corners[k]]) for k in inside}
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(loglik)))(draws)
    assert np.all(np.isfinite(np.asarray(values)))
    for name, g in grads.items():
        assert np.all(np.isfinite(np.asarray(g))), name
