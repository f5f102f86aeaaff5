"""Jitted NUTS programs for one shard: warmup, then sampling, on a flat unconstrained vector.

The programs take the shard's data, point mask, prior scale and target acceptance as
traced arguments, and the model and sampler settings as a static, hashable
:class:`ShardProgram`. JAX's jit cache therefore compiles each program once per shard
shape in a process, whatever the number of shards or retries.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from numpyro.infer import init_to_median, init_to_sample, init_to_value
from numpyro.infer.hmc import hmc
from numpyro.infer.util import initialize_model, potential_energy

from shardmc.core.tempering import tempered_model

#: Draws used by init_to_median to estimate each latent site's prior median.
INIT_MEDIAN_DRAWS = 15
#: Hessian eigenvalues are floored at this fraction of the largest one (and made positive)
#: before inverting, so the initial inverse mass matrix is always positive definite.
HESSIAN_EIGEN_FLOOR = 1e-10


class ShardProgram(NamedTuple):
    """Static (hashable) description of a shard's NUTS program."""

    model: Callable
    observed_sites: frozenset
    init_strategy: str
    num_warmup: int
    num_samples: int
    dense_mass: bool
    max_tree_depth: int
    masked: bool = True  # False when no shard has padded rows: the mask is then not applied
    init_mass: str = "hessian"  # initial inverse mass matrix: "hessian" | "identity"
    adapt_mass: bool = True  # False: keep the initial mass matrix, adapt the step size only


def _shard_model(program: ShardProgram, prior_scale, mask):
    return tempered_model(program.model, prior_scale, program.observed_sites,
                          mask if program.masked else None)


def _shard_potential(program: ShardProgram, data, mask, prior_scale, model_kwargs, unravel):
    shard_model = _shard_model(program, prior_scale, mask)
    kwargs = {**model_kwargs, **data}

    def potential_fn(flat_z):
        return potential_energy(shard_model, (), kwargs, unravel(flat_z))

    return shard_model, kwargs, potential_fn


def _init_strategy(name: str, init_values: dict) -> Callable:
    if name == "value":
        return init_to_value(values=init_values)
    if name == "sample":
        return init_to_sample()
    return init_to_median(num_samples=INIT_MEDIAN_DRAWS)


def _initial_flat_z(program, rng_key, data, mask, prior_scale, model_kwargs, init_values):
    shard_model = _shard_model(program, prior_scale, mask)
    info, _, _, _ = initialize_model(
        rng_key,
        shard_model,
        model_kwargs={**model_kwargs, **data},
        init_strategy=_init_strategy(program.init_strategy, init_values),
        validate_grad=False,
    )
    return ravel_pytree(info.z)


def _flat_potential(program: ShardProgram, data, mask, prior_scale, model_kwargs,
                    init_values) -> Callable:
    """The shard's potential as a function of the flat unconstrained vector (traced)."""
    _, unravel = _initial_flat_z(
        program, jax.random.key(0), data, mask, prior_scale, model_kwargs, init_values
    )
    return _shard_potential(program, data, mask, prior_scale, model_kwargs, unravel)[2]


def hessian_inverse_mass(potential_fn: Callable, flat_z: jax.Array, dense: bool) -> jax.Array:
    """Initial inverse mass matrix from the potential's Hessian at the initial point.

    Parameters whose posterior widths differ by orders of magnitude (typical of physical
    models with wide bounded priors) make the identity a poor start: tiny steps and
    saturated trees until the first adaptation window ends. The Laplace approximation
    H^-1 at the start point fixes the scales from the first iteration. Non-positive or
    tiny eigenvalues are replaced by |lambda| floored at HESSIAN_EIGEN_FLOOR * max|lambda|.
    """
    h = jax.hessian(potential_fn)(flat_z)
    h = 0.5 * (h + h.T)
    w, v = jnp.linalg.eigh(h)
    w = jnp.abs(w)
    w = jnp.maximum(w, HESSIAN_EIGEN_FLOOR * jnp.max(w))
    ok = jnp.all(jnp.isfinite(w)) & jnp.all(jnp.isfinite(v)) & (jnp.max(w) > 0)
    inv = (v / w) @ v.T
    inv = jnp.where(ok, inv, jnp.eye(flat_z.shape[0]))
    return inv if dense else jnp.diag(inv)


def warmup_chain(
    program: ShardProgram,
    rng_key: jax.Array,
    data: dict,
    mask: jax.Array,
    prior_scale: jax.Array,
    model_kwargs: dict,
    init_values: dict,
    target_accept_prob: jax.Array,
):
    """Initialise and adapt one chain; returns (z, step size, inverse mass, rng key, stats)."""
    key_init, key_run = jax.random.split(rng_key)
    flat_z, unravel = _initial_flat_z(
        program, key_init, data, mask, prior_scale, model_kwargs, init_values
    )
    _, _, potential_fn = _shard_potential(program, data, mask, prior_scale, model_kwargs, unravel)
    inverse_mass = None
    if program.init_mass == "hessian":
        inverse_mass = hessian_inverse_mass(potential_fn, flat_z, program.dense_mass)
    whiten = inverse_mass is not None and program.adapt_mass
    if whiten:  # adapt in coordinates where the Laplace covariance is the identity
        factor = (jnp.linalg.cholesky(inverse_mass) if program.dense_mass
                  else jnp.sqrt(inverse_mass))
        to_z = partial(_from_whitened, flat_z, factor)
        run_potential = (lambda v: potential_fn(to_z(v)))  # noqa: E731
        flat_z, inverse_mass = jnp.zeros_like(flat_z), None
    else:
        run_potential = potential_fn
    init_kernel, sample_kernel = hmc(potential_fn=run_potential, algo="NUTS")
    state = init_kernel(
        flat_z,
        program.num_warmup,
        inverse_mass_matrix=inverse_mass,
        adapt_mass_matrix=program.adapt_mass,
        dense_mass=program.dense_mass,
        target_accept_prob=target_accept_prob,
        max_tree_depth=program.max_tree_depth,
        find_heuristic_step_size=True,
        rng_key=key_run,
    )

    def step(carry, _):
        new = sample_kernel(carry)
        return new, (new.diverging, new.num_steps)

    state, (div, steps) = jax.lax.scan(step, state, None, length=program.num_warmup)
    adapt = state.adapt_state
    z, inverse_mass = state.z, adapt.inverse_mass_matrix
    if whiten:  # back to the model's coordinates: same dynamics, transformed mass matrix
        z = to_z(z)
        inverse_mass = (factor @ inverse_mass @ factor.T if program.dense_mass
                        else factor**2 * inverse_mass)
    return (z, adapt.step_size, inverse_mass, state.rng_key, div.sum(), steps.sum())


def _from_whitened(origin: jax.Array, factor: jax.Array, v: jax.Array) -> jax.Array:
    """z = origin + factor·v (factor: Cholesky factor, or elementwise sd when diagonal)."""
    return origin + (factor @ v if factor.ndim == 2 else factor * v)


def sample_chain(
    program: ShardProgram,
    z0: jax.Array,
    step_size: jax.Array,
    inverse_mass_matrix: jax.Array,
    rng_key: jax.Array,
    data: dict,
    mask: jax.Array,
    prior_scale: jax.Array,
    model_kwargs: dict,
    init_values: dict,
):
    """Sample one chain from ``z0`` with fixed adapted step size and mass matrix."""
    potential_fn = _flat_potential(program, data, mask, prior_scale, model_kwargs, init_values)
    init_kernel, sample_kernel = hmc(potential_fn=potential_fn, algo="NUTS")
    state = init_kernel(
        z0,
        0,
        step_size=step_size,
        inverse_mass_matrix=inverse_mass_matrix,
        adapt_step_size=False,
        adapt_mass_matrix=False,
        dense_mass=program.dense_mass,
        max_tree_depth=program.max_tree_depth,
        rng_key=rng_key,
    )

    def step(carry, _):
        new = sample_kernel(carry)
        stats = (new.z, new.diverging, new.accept_prob, new.num_steps, new.energy,
                 new.potential_energy)
        return new, stats

    _, out = jax.lax.scan(step, state, None, length=program.num_samples)
    return out


def laplace_precision(
    program: ShardProgram,
    z: jax.Array,
    data: dict,
    mask: jax.Array,
    prior_scale: jax.Array,
    model_kwargs: dict,
    init_values: dict,
) -> jax.Array:
    """Hessian (d, d) of the shard's potential (tempered prior and likelihood) at the
    flat unconstrained point ``z``: the precision of its Laplace approximation there.
    Noise-free, unlike a covariance estimated from draws (see shardmc.combine.covariance)."""
    potential_fn = _flat_potential(program, data, mask, prior_scale, model_kwargs, init_values)
    h = jax.hessian(potential_fn)(z)
    return 0.5 * (h + h.T)


def potential_batch(
    program: ShardProgram,
    draws: jax.Array,
    data: dict,
    mask: jax.Array,
    prior_scale: jax.Array,
    model_kwargs: dict,
    init_values: dict,
) -> jax.Array:
    """Potential energy (B,) of the (tempered) shard at each flat unconstrained draw (B, d),
    one draw after another (``lax.map``): under ``vmap`` a ``lax.cond`` of the model (the
    XPCS frame-row kernels') becomes a select of both branches, 5.4x slower on 1.5e6
    static points (benchmarks/results/scale-2cpu.json)."""
    potential_fn = _flat_potential(program, data, mask, prior_scale, model_kwargs, init_values)
    return jax.lax.map(potential_fn, draws)


#: Compiled programs, one compile per (program, shapes) in a process. The ``*_chains``
#: variants vmap over a leading chain axis of the rng keys (and of the warmup outputs).
warmup_program = jax.jit(warmup_chain, static_argnums=0)
sample_program = jax.jit(sample_chain, static_argnums=0)
laplace_program = jax.jit(laplace_precision, static_argnums=0)
potential_program = jax.jit(potential_batch, static_argnums=0)
_CHAIN_AXES_WARMUP = (0, None, None, None, None, None, None)
_CHAIN_AXES_SAMPLE = (0, 0, 0, 0, None, None, None, None, None)
warmup_program_chains = jax.jit(
    lambda program, *args: jax.vmap(partial(warmup_chain, program), _CHAIN_AXES_WARMUP)(*args),
    static_argnums=0,
)
sample_program_chains = jax.jit(
    lambda program, *args: jax.vmap(partial(sample_chain, program), _CHAIN_AXES_SAMPLE)(*args),
    static_argnums=0,
)
