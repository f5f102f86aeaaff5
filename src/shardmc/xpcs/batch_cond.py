"""``lax.cond`` that stays a branch under ``vmap`` while the batch agrees on the predicate.

Under ``jax.vmap`` a ``lax.cond`` whose predicate is batched becomes a ``select``: both
branches run for every member. The frame-row kernels branch on the parameters (a cheap
structured path, an expensive exact fallback), so a vmapped sampler (the jax backend's
chains and shards) would pay the fallback on every evaluation. :func:`uniform_cond`
keeps the cond: when every member of the batch takes the same branch only that branch
runs (batched), and only a mixed batch runs both and selects. Same values as
``lax.cond`` in every case; differentiable in forward mode (``jax.hessian`` of a
``custom_vjp`` whose rules call it) but, as any ``custom_vmap``, not in reverse mode: call
it from a ``custom_vjp``'s forward and backward rules.
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
        batched_ops = any(jax.tree.leaves(ops_batched))
        if not (pred_batched or batched_ops):  # jvp of this rule: nothing batched here
            return jax.lax.cond(pred, true_fn, false_fn, *ops), jax.tree.map(
                lambda _: False, jax.eval_shape(true_fn, *ops))

        def batched(fn: Callable) -> Callable:
            if batched_ops:
                return lambda *o: jax.vmap(fn, in_axes=axes)(*o)
            return lambda *o: jax.tree.map(
                lambda x: jnp.broadcast_to(x, (axis_size, *jnp.shape(x))), fn(*o))

        true_b, false_b = batched(true_fn), batched(false_fn)
        if not pred_batched:  # e.g. jacfwd's tangents: the batch shares the predicate
            out = jax.lax.cond(pred, true_b, false_b, *ops)
        else:
            # pred travels as an operand: a custom_vmap may not close over an outer
            # vmap's tracers
            def mixed(p: Any, *o: Any) -> Any:
                def pick(a: Any, b: Any) -> Any:
                    return jnp.where(p.reshape((axis_size,) + (1,) * (a.ndim - 1)), a, b)
                return jax.tree.map(pick, true_b(*o), false_b(*o))

            def not_all(p: Any, *o: Any) -> Any:
                return uniform_cond(jnp.any(p), mixed, lambda _, *o: false_b(*o), p, *o)

            out = uniform_cond(jnp.all(pred), lambda _, *o: true_b(*o), not_all, pred, *ops)
        return out, jax.tree.map(lambda _: True, out)

    return branch(pred, *operands)
