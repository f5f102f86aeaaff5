"""``lax.cond`` that stays a branch under ``vmap``: each branch runs only where a member of
the batch takes it.

Under ``jax.vmap`` a ``lax.cond`` whose predicate is batched becomes a ``select``: both
branches run for every member. The frame-row kernels branch on the parameters (a cheap
structured path, an expensive exact fallback), so a vmapped sampler (the jax backend's
chains and shards) would pay the fallback on every evaluation. :func:`uniform_cond`
keeps the cond: batched, each branch runs (over the whole batch) only if some member
takes it, and a select picks each member's result. Each branch is traced once per vmap
level, so nested vmaps (shards of chains) do not multiply the program. Same values as
``lax.cond``; differentiable in forward mode (``jax.hessian`` of a ``custom_vjp`` whose
rules call it) but, as any ``custom_vmap``, not in reverse mode: call it from a
``custom_vjp``'s forward and backward rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap


def uniform_cond(pred: Any, true_fn: Callable, false_fn: Callable, *operands: Any) -> Any:
    """``lax.cond(pred, true_fn, false_fn, *operands)``, batched as the module says."""

    @custom_vmap
    def branch(pred: Any, *ops: Any) -> Any:
        return jax.lax.cond(pred, true_fn, false_fn, *ops)

    @branch.def_vmap
    def branch_batched(axis_size: int, in_batched: Any, pred: Any, *ops: Any) -> tuple:
        pred_batched, *ops_batched = in_batched
        axes = tuple(jax.tree.map(lambda b: 0 if b else None, b) for b in ops_batched)
        if not any(jax.tree.leaves(ops_batched)):
            if not pred_batched:  # the jvp of this rule: nothing batched at this level
                return jax.lax.cond(pred, true_fn, false_fn, *ops), jax.tree.map(
                    lambda _: False, jax.eval_shape(true_fn, *ops))

            def batched(fn: Callable) -> Callable:
                return lambda *o: jax.tree.map(
                    lambda x: jnp.broadcast_to(x, (axis_size, *jnp.shape(x))), fn(*o))
        else:
            def batched(fn: Callable) -> Callable:
                return lambda *o: jax.vmap(fn, in_axes=axes)(*o)

        true_b, false_b = batched(true_fn), batched(false_fn)
        if not pred_batched:  # e.g. jacfwd's tangents: the batch shares the predicate
            out = jax.lax.cond(pred, true_b, false_b, *ops)
        else:
            def zeros(*o: Any) -> Any:
                return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                    jax.eval_shape(true_b, *o))

            # uniform_cond again: under an outer vmap these predicates are batched too
            taken = uniform_cond(jnp.any(pred), true_b, zeros, *ops)
            other = uniform_cond(jnp.any(~pred), false_b, zeros, *ops)

            def pick(a: Any, b: Any) -> Any:
                return jnp.where(pred.reshape((axis_size,) + (1,) * (a.ndim - 1)), a, b)

            out = jax.tree.map(pick, taken, other)
        return out, jax.tree.map(lambda _: True, out)

    return branch(pred, *operands)
