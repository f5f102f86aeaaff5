"""uniform_cond equals lax.cond under vmap, nested vmap and forward mode, and the row
kernels that branch on the parameters give the same values, gradients and Hessians
vmapped over a batch of parameter sets (the jax backend's chains) as one set at a time,
with the branch kept a branch (no select of both)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from shardmc import xpcs
from shardmc.xpcs import heterodyne_rows as HR
from shardmc.xpcs import row_layout as RL
from shardmc.xpcs import row_likelihood as RK
from shardmc.xpcs.batch_cond import uniform_cond
from shardmc.xpcs.physics import Geometry

#: vmapped and one-at-a-time programs fuse differently: agreement to the last bits.
BATCH_RTOL = 1e-12


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _slow(x, y):
    return jnp.sin(x) * y + 100.0


def _fast(x, y):
    return jnp.cos(x) * y


def _both(x, y):
    return (uniform_cond(x > 1.0, _slow, _fast, x, y),
            jax.lax.cond(x > 1.0, _slow, _fast, x, y))


@pytest.mark.parametrize("xs", [[0.5, 2.0, 0.3], [0.1, 0.2, 0.3], [2.0, 3.0, 4.0]],
                         ids=["mixed", "all false", "all true"])
def test_uniform_cond_equals_lax_cond(xs):
    xs, ys = jnp.asarray(xs), jnp.array([1.0, 2.0, 3.0])
    got, want = jax.vmap(_both)(xs, ys)
    np.testing.assert_array_equal(got, want)
    got, want = jax.vmap(_both, (0, None))(xs, 2.0)
    np.testing.assert_array_equal(got, want)
    got, want = jax.vmap(jax.vmap(_both))(jnp.stack([xs, xs + 1.5]), jnp.stack([ys, ys]))
    np.testing.assert_array_equal(got, want)
    got, want = jax.vmap(jax.jacfwd(_both))(xs, ys)
    np.testing.assert_array_equal(got, want)
    got, want = jax.jvp(_both, (xs[0], ys[0]), (1.0, 0.5))[1]
    assert float(got) == float(want)


def test_uniform_cond_stays_a_cond_under_vmap():
    jaxpr = str(jax.make_jaxpr(jax.vmap(lambda x, y: _both(x, y)[0]))(jnp.ones(3), jnp.ones(3)))
    assert "cond[" in jaxpr


def _inputs(physics, q):
    data, _ = xpcs.simulate(physics, n_angles=2, n_t=40, seed=0, q=q)
    rows = {k: jnp.asarray(v) for k, v in RL.row_arrays(data).items()}
    geometry = Geometry(*(jnp.asarray(x) for x in (data.t, data.dt, data.q, data.gap,
                                                   data.phi)))
    _, truth = xpcs.simulate(physics, n_angles=1, n_t=4)
    base = {k: jnp.asarray(float(v)) for k, v in truth.items()
            if k not in ("contrast", "offset", "sigma")}
    return rows, geometry, base


def _sum_squares(physics):
    fn = RK.static_sum_squares if physics == "static" else HR.two_component_sum_squares

    def total(p, rows, geometry):
        return jnp.sum(fn(p, jnp.array([0.3, 0.25]), jnp.array([1.0, 1.01]), geometry, rows))

    return total


def _static_span(p, geometry):
    decay = geometry.q ** 2 * RK.diffusion_integral(p, geometry)
    return float(decay[-1] - decay[0])


def _two_component_span(p, geometry):
    g, _ = HR._terms(p, geometry)
    return float(HR._max_span(g))


#: (physics, q Å⁻¹, amplitude to scale, scales): the scales put the decay-exponent
#: span on both sides of SINGLE_REFERENCE_SPAN (asserted).
KERNELS = [("static", 0.04, "D0", (1.0, 30.0)), ("two_component", 0.06, "D0_ref", (1.0, 30.0))]


@pytest.mark.parametrize("physics, q, amplitude, scales", KERNELS, ids=[k[0] for k in KERNELS])
@pytest.mark.parametrize("pattern", [(0, 0, 0), (1, 1, 1), (0, 1, 0)],
                         ids=["structured", "fallback", "mixed"])
def test_row_kernels_vmapped_equal_one_at_a_time(physics, q, amplitude, scales, pattern):
    rows, geometry, base = _inputs(physics, q)
    span = _static_span if physics == "static" else _two_component_span
    members = []
    for i, which in enumerate(pattern):
        p = dict(base)
        p[amplitude] = base[amplitude] * scales[which] * (1.0 + 0.05 * i)
        if physics == "two_component":
            p["D0_sample"] = base["D0_sample"] * scales[which]
        assert (span(p, geometry) > RK.SINGLE_REFERENCE_SPAN) == bool(which), span(p, geometry)
        members.append(p)
    stacked = jax.tree.map(lambda *v: jnp.stack(v), *members)
    total = _sum_squares(physics)
    value_grad = jax.value_and_grad(total)
    # data as arguments (traced under jit, as in the sampler), parameters batched
    values, grads = jax.jit(jax.vmap(value_grad, (0, None, None)))(stacked, rows, geometry)
    one_value_grad = jax.jit(value_grad)
    for i, p in enumerate(members):
        v, g = one_value_grad(p, rows, geometry)
        np.testing.assert_allclose(values[i], v, rtol=BATCH_RTOL)
        want = ravel_pytree(g)[0]
        got = ravel_pytree(jax.tree.map(lambda x, i=i: x[i], grads))[0]
        np.testing.assert_allclose(got, want, rtol=BATCH_RTOL,
                                   atol=BATCH_RTOL * float(jnp.max(jnp.abs(want))))
    if pattern == (0, 1, 0) and physics == "static":
        # the Hessian (the initial mass matrix) is forward over reverse through the branch;
        # two_component's takes the same path and ~20 s more to compile
        _, unravel = ravel_pytree(members[0])

        def hessian(p, rows, geometry):
            return jax.hessian(lambda f: total(unravel(f), rows, geometry))(ravel_pytree(p)[0])

        hessians = jax.jit(jax.vmap(hessian, (0, None, None)))(stacked, rows, geometry)
        for i, p in enumerate(members):
            h = jax.jit(hessian)(p, rows, geometry)
            np.testing.assert_allclose(hessians[i], h, rtol=1e-9,
                                       atol=1e-9 * float(jnp.max(jnp.abs(h))))
    jaxpr = str(jax.make_jaxpr(jax.vmap(value_grad, (0, None, None)))(stacked, rows, geometry))
    assert "cond[" in jaxpr  # the branch survives batching
