"""``shardmc.fit``: shard the data, sample every shard's tempered posterior, combine."""

from __future__ import annotations

import dataclasses
import logging
import platform
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from shardmc import params as P
from shardmc.backends import BACKENDS, select_backend
from shardmc.combine import check_method, combine
from shardmc.diagnostics import shard_diagnostics
from shardmc.errors import ShardFailedError, ShardMCInputError
from shardmc.posterior import SHARD_STAT_NAMES, Posterior
from shardmc.runtime import enable_x64
from shardmc.sampling import (
    SamplerConfig,
    SamplingPlan,
    ShardResult,
    ShardSpec,
    run_shard,
    shard_key,
)
from shardmc.sharding import ShardLayout, assign_points, shard_arrays
from shardmc.tempering import log_prob_shape, point_axis_mask
from shardmc.validation import (
    validate_config,
    validate_data,
    validate_num_shards,
    validate_space,
    validate_strata,
)

log = logging.getLogger(__name__)

#: Points per data subset used to probe the model and recompute deterministic sites.
PROBE_POINTS = 16


@dataclasses.dataclass(frozen=True)
class ModelProbe:
    """What a trace of the model on shard data tells the engine."""

    layout: P.ParamLayout
    observed_sites: frozenset
    deterministic_kept: tuple[str, ...]
    deterministic_skipped: tuple[str, ...]
    subset_kwargs: dict[str, Any]


def _subset(data: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in data.items()}


def probe_model(model: Callable, data: dict[str, np.ndarray], model_kwargs: dict[str, Any],
                layout: ShardLayout) -> ModelProbe:
    """Trace the model on shard data; refuse models CMC cannot shard, before any sampling."""
    n0 = int(layout.sizes[0])
    rows_a = layout.indices[0, : min(n0, PROBE_POINTS)]
    rows_b = layout.indices[-1, : min(int(layout.sizes[-1]), PROBE_POINTS)]
    shard0 = {**model_kwargs, **shard_arrays(data, layout, 0)}
    try:
        tr = P.trace_model(model, shard0)
        tr_a = P.trace_model(model, {**model_kwargs, **_subset(data, rows_a)})
        tr_b = P.trace_model(model, {**model_kwargs, **_subset(data, rows_b)})
    except ShardMCInputError:
        raise
    except Exception as exc:
        raise ShardMCInputError(
            f"model: calling the model on shard data failed: {type(exc).__name__}: {exc}"
        ) from exc
    latent = P.latent_sites(tr)
    if not latent:
        raise ShardMCInputError("model: expected at least one latent sample site, found none")
    observed = frozenset(n for n, s in tr.items() if s["type"] == "sample" and s["is_observed"])
    if not observed:
        raise ShardMCInputError("model: expected an observed site (obs=...), found none")
    for name, site in latent.items():
        if site["fn"].support.is_discrete:
            raise ShardMCInputError(f"model: latent site {name!r} is discrete; NUTS needs "
                                    "continuous latent sites")
        if np.shape(tr_a[name]["value"]) != np.shape(site["value"]):
            raise ShardMCInputError(
                f"model: latent site {name!r} has a shape that grows with the data "
                f"({np.shape(site['value'])}); CMC needs global parameters only")
    if not layout.mask.all():
        for name in observed:
            try:
                point_axis_mask(log_prob_shape(tr[name]), layout.mask[0])
            except ValueError as exc:
                raise ShardMCInputError(f"model: observed site {name!r}: {exc}") from exc
    kept, skipped = [], []
    for name in sorted(n for n, s in tr.items() if s["type"] == "deterministic"):
        va, vb = np.asarray(tr_a[name]["value"]), np.asarray(tr_b[name]["value"])
        same = va.shape == vb.shape == np.shape(tr[name]["value"]) and np.array_equal(va, vb)
        (kept if same else skipped).append(name)
    return ModelProbe(P.build_layout(tr), observed, tuple(kept), tuple(skipped),
                      {**model_kwargs, **_subset(data, rows_a)})


def _config(config: SamplerConfig | None, overrides: dict[str, Any]) -> SamplerConfig:
    base = config or SamplerConfig()
    names = {f.name for f in dataclasses.fields(SamplerConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ShardMCInputError(
            f"fit: unknown option(s) {unknown}; sampler options are {sorted(names)}")
    return validate_config(dataclasses.replace(base, **overrides))


def _specs(model, data, layout, model_kwargs, config, plan, probe, seed,
           init_values) -> Iterator[ShardSpec]:
    for k in range(layout.num_shards):
        yield ShardSpec(
            index=k, model=model, data=shard_arrays(data, layout, k), mask=layout.mask[k],
            padded=not layout.mask.all(),
            model_kwargs=model_kwargs, prior_scale=1.0 / layout.num_shards,
            seed_key=shard_key(seed, k), config=config, plan=plan,
            observed_sites=probe.observed_sites, init_values=init_values)


def _collect(backend, specs, num_shards: int, progress: bool,
             on_shard_done: Callable[[ShardResult], None] | None) -> list[ShardResult]:
    from tqdm.auto import tqdm

    results: list[ShardResult | None] = [None] * num_shards
    with tqdm(total=num_shards, desc="shards", unit="shard", disable=not progress) as bar:
        for result in backend.map(run_shard, specs):
            results[result.index] = result
            if on_shard_done is not None:
                on_shard_done(result)
            log.info("shard %d: %s in %.2f s", result.index, result.status,
                     result.stats.total_time)
            bar.update(1)
    return results  # type: ignore[return-value]


def _raise_failures(results: list[ShardResult]) -> None:
    bad = [r for r in results if not r.ok]
    if bad:
        lines = [f"shard {r.index}: {r.status}: {(r.error or '').strip().splitlines()[0]}"
                 for r in bad[:10]]
        raise ShardFailedError(f"{len(bad)} of {len(results)} shards failed:\n  "
                               + "\n  ".join(lines))


def _versions() -> dict[str, str]:
    import jax
    import numpyro

    import shardmc
    from shardmc._arviz import az as arviz
    return {"shardmc": shardmc.__version__, "jax": jax.__version__,
            "numpyro": numpyro.__version__, "arviz": arviz.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def combine_results(results: list[ShardResult], layout: P.ParamLayout, method: str,
                    space: str, seed: int, options: dict[str, Any]):
    """Combine the shards' draws in ``space``; returns (named constrained, unconstrained, info)."""
    stacked = np.stack([r.draws.reshape(-1, r.draws.shape[-1]) for r in results])
    if space == "unconstrained":
        res = combine(stacked, method, seed=seed, **options)
        return P.constrain(layout, res.draws), res.draws, res.info
    constrained = np.stack([P.flatten_constrained(layout, P.constrain(layout, d))
                            for d in stacked])
    res = combine(constrained, method, seed=seed, **options)
    named = P.unflatten_constrained(layout, res.draws)
    return named, P.unconstrain(layout, named), res.info


def fit(
    model: Callable,
    data: dict[str, Any],
    num_shards: int = 1,
    *,
    model_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    sharding: str = "random",
    strata: Any = None,
    method: str = "consensus",
    space: str = "unconstrained",
    combine_options: dict[str, Any] | None = None,
    backend: Any = "sequential",
    config: SamplerConfig | None = None,
    init_values: dict[str, Any] | None = None,
    progress: bool = False,
    on_shard_done: Callable[[ShardResult], None] | None = None,
    **sampler_options: Any,
) -> Posterior:
    """Fit ``model(**model_kwargs, **data)`` by Consensus Monte Carlo over ``num_shards``.

    data: per-point arrays sharing axis 0; model_kwargs: everything else, passed to every
    shard unchanged. Each shard samples prior^(1/K) x likelihood(shard) with NUTS
    (``config`` / keyword sampler options, see :class:`SamplerConfig`); the draws are
    combined with ``method`` in ``space`` and deterministic sites are recomputed from the
    untempered model. Runs in float64. Raises ShardMCInputError for bad input before any
    sampling, ShardFailedError if a shard fails after its retries.
    """
    enable_x64()
    data, n = validate_data(data)
    num_shards = validate_num_shards(num_shards, n)
    check_method(method)
    validate_space(space)
    config = _config(config, sampler_options)
    labels = validate_strata(strata, n, sharding)
    if not hasattr(backend, "map") and backend not in ("auto", *BACKENDS):
        raise ShardMCInputError(
            f"backend: expected one of {['auto', *sorted(BACKENDS)]}, found {backend!r}")
    model_kwargs = dict(model_kwargs or {})
    init_values = dict(init_values or {})
    layout = assign_points(n, num_shards, sharding, seed=seed, strata=labels)
    probe = probe_model(model, data, model_kwargs, layout)
    unknown = sorted(set(init_values) - set(probe.layout.names))
    if unknown:
        raise ShardMCInputError(f"init_values: unknown latent site(s) {unknown}; the model's "
                                f"latent sites are {list(probe.layout.names)}")
    if config.init_strategy == "value" and not init_values:
        raise ShardMCInputError("init_values: init_strategy 'value' needs init_values, found none")
    plan = SamplingPlan.from_config(config, layout.shard_length, probe.layout.dim)
    runner = select_backend(backend)
    specs = _specs(model, data, layout, model_kwargs, config, plan, probe, seed, init_values)
    results = _collect(runner, specs, num_shards, progress, on_shard_done)
    _raise_failures(results)
    named, unconstrained, info = combine_results(
        results, probe.layout, method, space, seed, dict(combine_options or {}))
    named.update(P.deterministic_values(model, probe.subset_kwargs,
                                        probe.deterministic_kept, named))
    draws = np.stack([r.draws for r in results])
    stats = {s: np.stack([r.sample_stats[s] for r in results]) for s in SHARD_STAT_NAMES}
    diag = shard_diagnostics(draws, stats["energy"], stats["diverging"], stats["tree_depth"],
                             config.max_tree_depth)
    provenance = {
        "seed": seed, "num_shards": num_shards, "num_points": n, "sharding": sharding,
        "shard_sizes": layout.sizes.tolist(), "method": method, "space": space,
        "combine_info": info, "sampler": dataclasses.asdict(config),
        "plan": dataclasses.asdict(plan), "backend": runner.capabilities.name,
        "shard_stats": [r.stats.to_dict() for r in results],
        "latent_sites": list(probe.layout.names),
        "deterministic_skipped": list(probe.deterministic_skipped),
        "versions": _versions(),
    }
    return Posterior(samples=named, unconstrained=unconstrained,
                     coords=probe.layout.coordinate_names(), shard_draws=draws,
                     shard_stats=stats, diagnostics=diag, provenance=provenance)
