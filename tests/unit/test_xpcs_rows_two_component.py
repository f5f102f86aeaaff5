"""The structured two_component row kernel equals the point-list and the dense row kernels,
value and gradient (wrt params, contrast, offset)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from shardmc import xpcs
from shardmc.xpcs import heterodyne_rows as HR
from shardmc.xpcs import row_layout as RL
from shardmc.xpcs import row_likelihood as RK
from shardmc.xpcs.physics import Geometry, PointIndex, c2_mean

#: Agreement asked against the point-list kernel (relative, value and gradient), as
#: tests/unit/test_xpcs_rows.py (whose small helpers below are copied: a test module
#: is not importable under every pytest import mode).
EXACT = 1e-10


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _params(rng, **fixed):
    _, truth = xpcs.simulate("two_component", n_angles=1, n_t=4)
    out = {k: jnp.asarray(v * (1 + 0.2 * rng.uniform(-1, 1)))
           for k, v in truth.items() if k not in ("contrast", "offset", "sigma")}
    out.update({k: jnp.asarray(v) for k, v in fixed.items()})
    return out


def _data(*, n_t=66, n_angles=3, seed=0, t=None, q=None):
    data, _ = xpcs.simulate("two_component", n_angles=n_angles, n_t=n_t, seed=seed,
                            known_sigma=True, **({} if q is None else {"q": q}))
    if t is not None:
        data = xpcs.XPCSData(c2=data.c2, t=t, q=data.q, phi=data.phi, dt=float(np.diff(t).min()),
                             sigma=data.sigma, gap=data.gap)
    return data


def _inputs(data, known):
    rows = {k: jnp.asarray(v) for k, v in RL.row_arrays(data, known_noise=known).items()}
    geometry = Geometry(*(jnp.asarray(x) for x in (data.t, data.dt, data.q, data.gap,
                                                   data.phi)))
    return rows, geometry


def _value_and_grad(fn):
    """jit(value_and_grad) of Σ fn(params, contrast, offset, *data) wrt the first three:
    compiled once per shape, so the cases below share one compilation."""
    return jax.jit(jax.value_and_grad(lambda p, c, o, *data: jnp.sum(fn(p, c, o, *data)),
                                      argnums=(0, 1, 2)))


def _on_points(p, contrast, offset, geometry, pts, weight):
    index = PointIndex(pts["phi_idx"], pts["t1_idx"], pts["t2_idx"])
    return weight * (pts["c2"] - c2_mean("two_component", p, contrast, offset, geometry,
                                         index)) ** 2


STRUCTURED = _value_and_grad(HR.two_component_sum_squares)
DENSE = _value_and_grad(partial(RK.dense_sum_squares, "two_component"))
POINTS = _value_and_grad(_on_points)


def _assert_same(got, want):
    """(value, gradients) pairs agree to EXACT, relative (gradients: to the largest)."""
    (v_r, g_r), (v_p, g_p) = got, want
    assert abs(float(v_r) - float(v_p)) <= EXACT * abs(float(v_p))
    flat_r, flat_p = ravel_pytree(g_r)[0], ravel_pytree(g_p)[0]
    assert np.all(np.isfinite(flat_r))
    np.testing.assert_allclose(flat_r, flat_p, rtol=EXACT,
                               atol=EXACT * float(jnp.max(jnp.abs(flat_p))))


def _span(params, data, known):
    """The largest decay-exponent span the structured kernel checks against 600."""
    _, geometry = _inputs(data, known)
    g, g2 = HR._terms(params, geometry)
    return float(HR._max_span(g + g2 if known else g))


#: (name, data options, parameter overrides, structured branch taken: (sampled, known)).
CASES = [
    ("typical", {}, {}, (True, True)),
    ("alpha_sample<0 on the dt/2 floor", {}, {"alpha_sample": -1.5, "D_offset_sample": 20.0},
     (True, True)),
    ("fs clipped at 1 (f1=8, f2=2)", {}, {"f1": 8.0, "f2": 2.0}, (True, True)),
    ("fraction exponent clipped at 60", {}, {"f1": 20.0, "f2": 1.0, "f0": 1e-30},
     (True, True)),
    ("fs clipped at 0 and at 1", {}, {"f0": 0.5, "f1": 0.5, "f2": 3.0, "f3": -0.3},
     (True, True)),
    ("J_ref floored at 0, v signed", {}, {"D0_ref": 1e3, "alpha_ref": 1.0,
                                          "D_offset_ref": -3e3, "v_offset": -80.0},
     (True, True)),
    ("non-uniform t", {"t": np.cumsum(np.r_[0.0, np.random.default_rng(3).uniform(
        0.02, 0.3, 65)])}, {"alpha_ref": -0.7, "beta": 0.5}, (True, True)),
    ("span ~480: structured, dense with known noise", {"q": 0.06}, {}, (True, False)),
    ("span > 600: dense fallback", {"q": 0.1}, {}, (False, False)),
    ("one angle", {"n_angles": 1}, {}, (True, True)),
]


@pytest.mark.parametrize("name, data_opts, overrides, structured", CASES,
                         ids=[c[0] for c in CASES])
@pytest.mark.parametrize("known", [False, True], ids=["sampled", "known"])
def test_two_component_kernel_equals_point_and_dense_kernels(name, data_opts, overrides,
                                                             structured, known):
    rng = np.random.default_rng(len(name))
    data = _data(**data_opts)
    params = _params(rng, **overrides)
    assert (_span(params, data, known) <= RK.SINGLE_REFERENCE_SPAN) == structured[known]
    rows, geometry = _inputs(data, known)
    pts = {k: jnp.asarray(v) for k, v in xpcs.pool(data).items()}
    weight = 1.0 / pts["sigma"] ** 2 if known else jnp.ones(())
    args = (params, jnp.linspace(0.3, 0.2, data.n_phi), jnp.linspace(1.0, 1.01, data.n_phi))
    got = STRUCTURED(*args, geometry, rows)
    _assert_same(got, POINTS(*args, geometry, pts, weight))
    _assert_same(got, DENSE(*args, geometry, rows))


def test_frame_sums_equal_direct_sums():
    """The reverse scan against Σ_{j>i} p_i b_j e^−(L_j − L_i) summed directly."""
    rng = np.random.default_rng(0)
    n_t, n_phi = 40, 2
    decay = np.cumsum(rng.exponential(30.0, n_t))  # spans ~1200: beyond one reference frame
    decay[5:12] = decay[4]
    p, b = rng.normal(size=(n_phi, n_t)), rng.normal(size=(n_phi, n_t))
    p1, b1 = rng.normal(size=(1, n_t)), rng.normal(size=(1, n_t))
    per_angle = (jnp.asarray(p), jnp.asarray(b), jnp.asarray(decay))
    per_frame = (jnp.asarray(p1), jnp.asarray(b1), jnp.asarray(decay / 30.0))
    got, alone = HR._frame_sums([[per_angle, per_frame], [per_frame]], n_phi)
    cols = np.arange(n_t)
    later = cols[None, :] > cols[:, None]
    e = np.where(later, np.exp(-np.where(later, decay[None, :] - decay[:, None], 0.0)), 0.0)
    e1 = np.where(later, np.exp(-np.where(later, (decay[None, :] - decay[:, None]) / 30.0,
                                          0.0)), 0.0)
    np.testing.assert_allclose(got, p * (b @ e.T) + p1 * (b1 @ e1.T), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(alone, np.broadcast_to(p1 * (b1 @ e1.T), (n_phi, n_t)),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("known", [False, True], ids=["sampled", "known"])
def test_two_component_kernel_runs_eagerly_and_under_jit(known):
    """Eager and jit values agree; the jitted value-and-gradient is finite (same shapes as
    the cases above: no new compilation)."""
    data = _data(seed=7)
    rows, geometry = _inputs(data, known)
    args = (_params(np.random.default_rng(5)), jnp.full(3, 0.25), jnp.ones(3))
    eager = jnp.sum(HR.two_component_sum_squares(*args, geometry, rows))
    value, grads = STRUCTURED(*args, geometry, rows)
    assert np.isfinite(float(value)) and float(value) == pytest.approx(float(eager), rel=1e-12)
    assert np.all(np.isfinite(ravel_pytree(grads)[0]))
