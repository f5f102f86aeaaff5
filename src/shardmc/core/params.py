"""Model parameters: latent-site layout, flat <-> named draws, constraining, deterministics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions.transforms import biject_to

#: Draws per batch when recomputing deterministic sites (bounds peak memory).
DETERMINISTIC_BATCH = 1024


class ParamLayout(NamedTuple):
    """Latent sites in flattening order (sorted names), unconstrained and constrained shapes."""

    names: tuple[str, ...]
    unconstrained_shapes: tuple[tuple[int, ...], ...]
    constrained_shapes: tuple[tuple[int, ...], ...]
    transforms: tuple[Any, ...]
    deterministic: tuple[str, ...]

    @property
    def dim(self) -> int:
        return int(sum(np.prod(s, dtype=int) for s in self.unconstrained_shapes))

    def coordinate_names(self) -> list[str]:
        """One label per unconstrained coordinate, e.g. ``beta[0]``, ``sigma``."""
        out = []
        for name, shape in zip(self.names, self.unconstrained_shapes, strict=True):
            if shape == ():
                out.append(name)
            else:
                out.extend(f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(shape))
        return out


def trace_model(model: Callable, kwargs: dict[str, Any]) -> dict:
    """A seeded trace of ``model(**kwargs)``."""
    return handlers.trace(handlers.seed(model, 0)).get_trace(**kwargs)


def latent_sites(tr: dict) -> dict[str, dict]:
    """Non-observed sample sites of a trace, by name."""
    return {n: s for n, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}


def build_layout(tr: dict) -> ParamLayout:
    """The parameter layout of a model from one of its traces."""
    latent = latent_sites(tr)
    names = tuple(sorted(latent))
    transforms = tuple(biject_to(latent[n]["fn"].support) for n in names)
    cshapes = tuple(tuple(jnp.shape(latent[n]["value"])) for n in names)
    ushapes = tuple(
        tuple(t.inverse_shape(s)) for t, s in zip(transforms, cshapes, strict=True)
    )
    determ = tuple(sorted(n for n, s in tr.items() if s["type"] == "deterministic"))
    return ParamLayout(names, ushapes, cshapes, transforms, determ)


def _split(flat: jax.Array, shapes) -> list[jax.Array]:
    sizes = [int(np.prod(s, dtype=int)) for s in shapes]
    parts = jnp.split(flat, np.cumsum(sizes)[:-1], axis=-1)
    return [p.reshape(flat.shape[:-1] + s) for p, s in zip(parts, shapes, strict=True)]


def constrain(layout: ParamLayout, flat: np.ndarray) -> dict[str, np.ndarray]:
    """Unconstrained flat draws (..., d) -> constrained named draws (..., *shape)."""
    parts = _split(jnp.asarray(flat), layout.unconstrained_shapes)
    return {n: np.asarray(t(p)) for n, t, p in zip(layout.names, layout.transforms, parts,
                                                   strict=True)}


def flatten_constrained(layout: ParamLayout, values: dict[str, np.ndarray]) -> np.ndarray:
    """Constrained named draws (S, *shape) -> flat (S, d_c)."""
    s = next(iter(values.values())).shape[0]
    return np.concatenate([np.reshape(values[n], (s, -1)) for n in layout.names], axis=1)


def unflatten_constrained(layout: ParamLayout, flat: np.ndarray) -> dict[str, np.ndarray]:
    """Flat constrained draws (S, d_c) -> named draws (S, *shape)."""
    return {n: np.asarray(p) for n, p in
            zip(layout.names, _split(jnp.asarray(flat), layout.constrained_shapes), strict=True)}


def unconstrain(layout: ParamLayout, values: dict[str, np.ndarray]) -> np.ndarray:
    """Constrained named draws (S, *shape) -> unconstrained flat (S, d)."""
    s = next(iter(values.values())).shape[0]
    parts = [np.reshape(np.asarray(t.inv(jnp.asarray(values[n]))), (s, -1))
             for n, t in zip(layout.names, layout.transforms, strict=True)]
    return np.concatenate(parts, axis=1)


def deterministic_values(model: Callable, kwargs: dict[str, Any], names: tuple[str, ...],
                         values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Deterministic sites ``names`` of the (untempered) model at each draw of ``values``."""
    if not names:
        return {}

    def one(draw):
        tr = handlers.trace(handlers.substitute(handlers.seed(model, 0), data=draw))
        tr = tr.get_trace(**kwargs)
        return {n: tr[n]["value"] for n in names}

    batched = jax.jit(jax.vmap(one))
    s = next(iter(values.values())).shape[0]
    chunks = [batched({n: v[i:i + DETERMINISTIC_BATCH] for n, v in values.items()})
              for i in range(0, s, DETERMINISTIC_BATCH)]
    return {n: np.concatenate([np.asarray(c[n]) for c in chunks]) for n in names}
