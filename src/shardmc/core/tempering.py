"""The shard target: prior^(1/K) x likelihood(shard), with padded points masked out.

:class:`temper` is a NumPyro effect handler. Every sample site that is *not* one of the
model's own observed sites (latent sites, and the ``_<name>_log_det`` Jacobian factors
that NumPyro emits in unconstrained space) has its log density scaled by
``prior_scale`` (1/K); observed sites are masked with the shard's point mask. Because
the Jacobian terms are scaled together with the prior, the shard targets multiply back
to the full posterior exactly in unconstrained space (DESIGN invariant 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from numpyro import handlers
from numpyro.primitives import Messenger


class temper(Messenger):
    """Scale non-observed sites by ``prior_scale``; mask observed sites with ``point_mask``.

    observed_sites: names of the user model's observed sites (from a trace of the model).
    point_mask: (n,) bool over the shard's rows, or None for no masking.
    """

    def __init__(
        self,
        fn: Callable | None = None,
        *,
        prior_scale: Any,
        observed_sites: frozenset[str],
        point_mask: Any = None,
    ) -> None:
        self.prior_scale = prior_scale
        self.observed_sites = observed_sites
        self.point_mask = point_mask
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "sample":
            return
        if msg["name"] in self.observed_sites:
            if self.point_mask is not None:
                mask = point_axis_mask(log_prob_shape(msg), self.point_mask)
                msg["fn"] = msg["fn"].mask(mask)
            return
        scale = self.prior_scale
        msg["scale"] = scale if msg.get("scale") is None else scale * msg["scale"]


def log_prob_shape(site: dict) -> tuple[int, ...]:
    """Shape of a sample site's log density: its value's batch part broadcast with the
    distribution's batch shape (an observed value may be larger than the batch shape)."""
    fn, value = site["fn"], site["value"]
    value_batch = jnp.shape(value)[: jnp.ndim(value) - len(fn.event_shape)]
    return tuple(jnp.broadcast_shapes(value_batch, tuple(fn.batch_shape)))


def point_axis_mask(batch_shape: tuple[int, ...], point_mask: Any) -> Any:
    """Reshape an (n,) mask to broadcast over a log-density shape along its point axis.

    The point axis is the first dimension of length n. Raises ValueError if there is none.
    """
    n = point_mask.shape[0]
    if n not in batch_shape:
        raise ValueError(
            f"an observed site has log-density shape {tuple(batch_shape)} with no axis of the "
            f"shard length {n}; shardmc cannot mask padded points. Vectorise the "
            "likelihood over points (one batch axis per point) or choose num_shards that "
            "divides the number of points"
        )
    axis = list(batch_shape).index(n)
    shape = (n,) + (1,) * (len(batch_shape) - axis - 1)
    return jnp.reshape(point_mask, shape)


def observed_site_names(model: Callable, model_kwargs: dict[str, Any]) -> frozenset[str]:
    """Names of the observed sample sites of ``model`` called with ``model_kwargs``."""
    tr = handlers.trace(handlers.seed(model, 0)).get_trace(**model_kwargs)
    return frozenset(
        name for name, site in tr.items() if site["type"] == "sample" and site["is_observed"]
    )


def tempered_model(
    model: Callable,
    prior_scale: Any,
    observed_sites: frozenset[str],
    point_mask: Any = None,
) -> Callable:
    """``model`` wrapped in :class:`temper` (a new callable; the model is unchanged)."""

    def shard_model(*args: Any, **kwargs: Any) -> Any:
        with temper(
            prior_scale=prior_scale, observed_sites=observed_sites, point_mask=point_mask
        ):
            return model(*args, **kwargs)

    return shard_model
