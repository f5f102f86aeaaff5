"""``shardmc.fit``: shard the data, sample every shard's tempered posterior, combine."""

from __future__ import annotations

import dataclasses
import logging
import platform
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from shardmc.backends import (
    BACKENDS,
    BackendChoice,
    Workload,
    backend_choice,
    preflight,
    select_backend,
)
from shardmc.backends.resources import MemoryProfile
from shardmc.combine import check_options, combine, option_names
from shardmc.combine.mc_error import combined_mean_error
from shardmc.core import params as P
from shardmc.core.diagnostics import result_diagnostics, stack_diagnostics
from shardmc.core.exclusion import (
    EXCLUDE_REMEDY,
    EarlyAbort,
    apply_failure_policy,
    failure_lines,
    validate_policy,
)
from shardmc.core.heterogeneity import constrained_shard_means
from shardmc.core.input_checks import (
    validate_config,
    validate_data,
    validate_num_shards,
    validate_space,
    validate_strata,
)
from shardmc.core.posterior import SHARD_STAT_NAMES, Posterior
from shardmc.core.progress import PhaseClock, ShardProgress
from shardmc.core.sampling import (
    SamplerConfig,
    SamplingPlan,
    ShardResult,
    ShardSpec,
    run_shard,
    shard_key,
)
from shardmc.core.sharding import ShardLayout, assign_points, shard_arrays
from shardmc.core.tempering import log_prob_shape, point_axis_mask
from shardmc.errors import ShardFailedError, ShardMCInputError
from shardmc.runtime import enable_x64

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


def shard_observations(model: Callable, data: dict[str, np.ndarray],
                       model_kwargs: dict[str, Any], layout: ShardLayout) -> np.ndarray:
    """Data points in each shard (K,): the shard sizes, or, for a model whose entries along
    axis 0 carry several points each (XPCS frame rows), the sum of its
    ``observation_counts(data, model_kwargs)`` over each shard's real entries."""
    counts = observation_counts(model, data, model_kwargs)
    return np.where(layout.mask, counts[layout.indices], 0).sum(axis=1)


def memory_profile(model: Callable, data: dict[str, np.ndarray],
                   model_kwargs: dict[str, Any]) -> MemoryProfile | None:
    """The model's ``memory_profile(data, model_kwargs)`` where it has one (wide rows whose
    temporaries the per-point memory model does not cover), else None."""
    profile_fn = getattr(model, "memory_profile", None)
    return None if profile_fn is None else profile_fn(data, model_kwargs)


def observation_counts(model: Callable, data: dict[str, np.ndarray],
                       model_kwargs: dict[str, Any]) -> np.ndarray:
    """Data points carried by each entry of ``data`` along axis 0: the model's
    ``observation_counts(data, model_kwargs)`` where it has one, else one per entry."""
    counts_fn = getattr(model, "observation_counts", None)
    if counts_fn is None:
        return np.ones(next(iter(data.values())).shape[0], dtype=np.int64)
    return np.asarray(counts_fn(data, model_kwargs), dtype=np.int64)


def _config(config: SamplerConfig | None, overrides: dict[str, Any]) -> SamplerConfig:
    base = config or SamplerConfig()
    names = {f.name for f in dataclasses.fields(SamplerConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ShardMCInputError(
            f"fit: unknown option(s) {unknown}; sampler options are {sorted(names)}")
    return validate_config(dataclasses.replace(base, **overrides))


def _specs(model, data, layout, model_kwargs, config, plan, probe, seed,
           init_values, indices=None, prior_scale=None) -> Iterator[ShardSpec]:
    """Specs of shards ``indices`` (default all) at ``prior_scale`` (default 1/K)."""
    for k in range(layout.num_shards) if indices is None else indices:
        yield ShardSpec(
            index=k, model=model, data=shard_arrays(data, layout, k), mask=layout.mask[k],
            padded=not layout.mask.all(),
            model_kwargs=model_kwargs, prior_scale=prior_scale or 1.0 / layout.num_shards,
            seed_key=shard_key(seed, k), config=config, plan=plan,
            observed_sites=probe.observed_sites, init_values=init_values)


#: ``lookup(index, prior_scale)``: a finished shard result kept from an earlier run, or None.
ShardLookup = Callable[[int, float], "ShardResult | None"]


def _collect(backend, specs, num_shards: int, progress: bool,
             on_shard_done: Callable[[ShardResult], None] | None,
             lookup: ShardLookup | None = None,
             abort: EarlyAbort | None = None) -> list[ShardResult]:
    """Every shard's result, kept ones from ``lookup`` first; ``abort`` sees each result
    as it arrives and may stop the run (ShardFailedError)."""
    results: dict[int, ShardResult] = {}
    with ShardProgress(num_shards, enabled=progress) as tracker:
        pending, scales = [], {}
        for spec in specs:
            scales[spec.index] = spec.prior_scale
            kept = lookup(spec.index, spec.prior_scale) if lookup is not None else None
            if kept is None:
                pending.append(spec)
            else:
                results[kept.index] = kept
                tracker.on_result(kept)
                if abort is not None:
                    abort.observe(kept)
        if len(pending) < num_shards:
            log.info("%d of %d shards kept from the run store; running %d",
                     num_shards - len(pending), num_shards, len(pending))
        events = getattr(backend.capabilities, "reports_events", False)
        stream = (() if not pending else
                  backend.map(run_shard, pending, on_event=tracker.on_event) if events
                  else backend.map(run_shard, pending))
        try:
            for result in stream:
                result.prior_scale = scales[result.index]
                results[result.index] = result
                tracker.on_result(result)
                if on_shard_done is not None:
                    on_shard_done(result)
                if abort is not None:
                    abort.observe(result)
        finally:  # an abort or interrupt: the backend's map stops what it has in flight
            close = getattr(stream, "close", None)
            if close is not None:
                close()
    return [results[k] for k in sorted(results)]


def _diagnosed(result: ShardResult, parts: dict[int, tuple[ShardResult, dict]],
               max_tree_depth: int) -> dict[str, np.ndarray]:
    """The shard's diagnostics computed on arrival, or now (shards kept from a run store)."""
    arrived = parts.get(result.index)
    if arrived is not None and arrived[0] is result:
        return arrived[1]
    return result_diagnostics(result, max_tree_depth)


def _announce_backend(backend: Any, workload: Workload, model: Callable,
                      progress: bool) -> BackendChoice | None:
    """For ``backend="auto"``: the choice and its reason, logged (and printed to stderr
    with ``progress``) before any sampling; None for a named backend or an instance."""
    if not (isinstance(backend, str) and backend == "auto"):
        return None
    choice = backend_choice(workload, model)
    text = f"backend auto: {choice.name} ({choice.reason})"
    log.info(text)
    if progress:
        print(text, file=sys.stderr, flush=True)
    return choice


def _raise_failures(results: list[ShardResult]) -> None:
    bad = [r for r in results if not r.ok]
    if bad:
        raise ShardFailedError(f"{len(bad)} of {len(results)} shards failed:\n  "
                               + failure_lines(bad), remedies=[EXCLUDE_REMEDY])


def _versions() -> dict[str, str]:
    import jax
    import numpyro

    import shardmc
    from shardmc.core._arviz import az as arviz
    return {"shardmc": shardmc.__version__, "jax": jax.__version__,
            "numpyro": numpyro.__version__, "arviz": arviz.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def stacked_laplace(results: list[ShardResult]) -> np.ndarray | None:
    """The shards' Laplace precisions (K, d, d), or None unless every shard has one."""
    if any(r.laplace_precision is None for r in results):
        return None
    return np.stack([r.laplace_precision for r in results])


def laplace_option(method: str, laplace: np.ndarray | None) -> dict[str, Any]:
    """``{"laplace": laplace}`` when ``method`` takes the shards' Laplace precisions (see
    :mod:`shardmc.combine.covariance`) and there are some, else ``{}``."""
    if laplace is None or "laplace" not in option_names(method):
        return {}
    return {"laplace": laplace}


def combine_results(draws: np.ndarray, layout: P.ParamLayout, method: str,
                    space: str, seed: int, options: dict[str, Any],
                    laplace: np.ndarray | None = None):
    """Combine the shards' draws (K, C, S, d) in ``space`` (``laplace``: their Laplace
    precisions); returns (named constrained, unconstrained, info)."""
    stacked = draws.reshape(draws.shape[0], -1, draws.shape[-1])
    if callable(method):  # a model-aware combiner, e.g. shardmc.xpcs.rate_space_combiner
        if space != "unconstrained":
            raise ShardMCInputError("space: a combiner function works in 'unconstrained' "
                                    f"space, found {space!r}")
        draws, info = method(stacked, coords=layout.coordinate_names(), seed=seed, **options)
        return P.constrain(layout, draws), draws, info
    if space == "unconstrained":
        options = {**laplace_option(method, laplace), **options}
        res = combine(stacked, method, seed=seed, **options)
        return P.constrain(layout, res.draws), res.draws, res.info
    constrained = np.stack([P.flatten_constrained(layout, P.constrain(layout, d))
                            for d in stacked])
    res = combine(constrained, method, seed=seed, **options)
    named = P.unflatten_constrained(layout, res.draws)
    return named, P.unconstrain(layout, named), res.info


def _mean_error(draws: np.ndarray, laplace: np.ndarray | None, combined: np.ndarray,
                method: Any, space: str, seed: int, info: dict, options: dict | None,
                coords: list[str]) -> dict | None:
    """Monte Carlo error of the combined mean (see :mod:`shardmc.combine.mc_error`) of shard
    draws (K, C, S, d) for a named method in unconstrained space; ``auto`` reruns the
    method it chose."""
    if not isinstance(method, str) or space != "unconstrained" or draws.shape[0] < 2:
        return None
    chosen = info.get("chosen", method)
    opts = {**laplace_option(chosen, laplace),
            **{k: v for k, v in (options or {}).items() if k in option_names(chosen)}}
    return combined_mean_error(draws, combined, chosen, lambda z: combine(
        z, chosen, seed=seed, **opts).draws, coords)


#: Draws per shard used for the per-shard moments of deterministic sites (provenance).
SHARD_MOMENT_DRAWS = 200


def deterministics_with_shard_moments(model: Callable, probe: ModelProbe,
                                      named: dict[str, np.ndarray], draws: np.ndarray
                                      ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Deterministic sites at the combined draws ``named``, and per-shard mean and sd of
    each scalar one (e.g. the physical parameters of XPCS rate blocks) from up to
    SHARD_MOMENT_DRAWS evenly spaced draws of each shard's (K, C, S, d) unconstrained
    draws, in one batched evaluation (one compile). The moments are JSON-able."""
    k, d = draws.shape[0], draws.shape[-1]
    flat = draws.reshape(k, -1, d)
    rows = np.unique(np.linspace(0, flat.shape[1] - 1, SHARD_MOMENT_DRAWS).astype(int))
    picked = P.constrain(probe.layout, flat[:, rows].reshape(-1, d))
    s = next(iter(named.values())).shape[0]
    both = {n: np.concatenate([named[n], picked[n]]) for n in picked}
    values = P.deterministic_values(model, probe.subset_kwargs, probe.deterministic_kept,
                                    both)
    at_draws = {n: v[:s] for n, v in values.items()}
    scalar = {n: np.asarray(v[s:]).reshape(k, len(rows)) for n, v in values.items()
              if np.ndim(v) == 1}
    moments = {"names": list(scalar),
               "means": [scalar[n].mean(axis=1).tolist() for n in scalar],
               "sds": [scalar[n].std(axis=1, ddof=1).tolist() for n in scalar]}
    return at_draws, moments


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
    backend: Any = "auto",
    backend_options: dict[str, Any] | None = None,
    config: SamplerConfig | None = None,
    init_values: dict[str, Any] | None = None,
    progress: bool = False,
    on_shard_done: Callable[[ShardResult], None] | None = None,
    on_shard_failure: str = "fail",
    early_abort: bool = True,
    lookup: ShardLookup | None = None,
    **sampler_options: Any,
) -> Posterior:
    """Fit ``model(**model_kwargs, **data)`` by Consensus Monte Carlo over ``num_shards``.

    data: per-point arrays sharing axis 0; model_kwargs: everything else, passed to every
    shard unchanged. Each shard samples prior^(1/K) x likelihood(shard) with NUTS
    (``config`` / keyword sampler options, see :class:`SamplerConfig`); the draws are
    combined with ``method`` in ``space`` and deterministic sites are recomputed from the
    untempered model (``method`` may also be a function ``(draws (K, S, d), *, coords,
    seed, **combine_options) -> (draws (S', d), info dict)`` in unconstrained space, as
    :func:`shardmc.xpcs.rate_space_combiner` makes). Runs in float64. ``backend``: a
    name (built with ``backend_options`` and closed after the run, see
    :func:`shardmc.select_backend`; ``auto``, the default, picks one from the machine and
    the workload, logs the choice with its reason, prints it with ``progress`` and keeps it
    in ``provenance["backend_choice"]``) or a backend instance (left open).
    ``on_shard_failure``: "fail" (default) raises ShardFailedError naming every shard
    that failed or diverged after its retries;
    "exclude" re-runs the K' survivors with the prior re-tempered to 1/K' and records the
    exclusions in the provenance (see :mod:`shardmc.core.exclusion`). ``early_abort`` (with
    "fail"): stop as soon as most of the first shards failed or diverged at the critical
    rate (:class:`shardmc.core.exclusion.EarlyAbort`) instead of sampling the rest.
    ``on_shard_done`` is called with every result as it arrives (a run store persists
    it); ``lookup(index, prior_scale)`` returns a result kept from an interrupted run, and
    that shard is not run again (see :mod:`shardmc.workflow.store`). Raises
    ShardMCInputError for bad input before any sampling.
    """
    started, clock = time.perf_counter(), PhaseClock()
    enable_x64()
    data, n = validate_data(data)
    num_shards = validate_num_shards(num_shards, n)
    if not callable(method):
        check_options(method, dict(combine_options or {}))
    validate_space(space)
    validate_policy(on_shard_failure)
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
    observations = shard_observations(model, data, model_kwargs, layout)
    plan = SamplingPlan.from_config(config, int(observations.max()), probe.layout.dim)
    profile = memory_profile(model, data, model_kwargs)
    workload = Workload(num_shards, layout.shard_length, probe.layout.dim, plan.n_chains,
                        plan.n_warmup, plan.n_samples,
                        sum(int(a[:1].nbytes) for a in data.values()),
                        shard_observations=int(observations.max()),
                        row_temp_bytes=None if profile is None else profile.row_temp_bytes,
                        program_bytes=0 if profile is None else profile.program_bytes)
    choice = _announce_backend(backend, workload, model, progress)
    runner = select_backend(backend, workload=workload, model=model, choice=choice,
                            **(backend_options or {}))
    diag_parts: dict[int, tuple[ShardResult, dict[str, np.ndarray]]] = {}

    def done(result: ShardResult) -> None:  # persist first, then diagnose while shards run
        if on_shard_done is not None:
            on_shard_done(result)
        if result.ok:
            diag_parts[result.index] = (result, result_diagnostics(result, config.max_tree_depth))

    try:
        preflight(runner, model, workload)
        specs = _specs(model, data, layout, model_kwargs, config, plan, probe, seed, init_values)
        clock.seconds["setup"] = round(time.perf_counter() - started, 3)
        abort = EarlyAbort(num_shards) if early_abort and on_shard_failure == "fail" else None
        with clock.phase("shards"):
            results = _collect(runner, specs, num_shards, progress, done, lookup, abort)
            results, excluded = apply_failure_policy(results, on_shard_failure, lambda idx, scale: (
                _collect(runner, _specs(model, data, layout, model_kwargs, config, plan, probe,
                                        seed, init_values, idx, scale),
                         len(idx), progress, done, lookup)))
    finally:
        if runner is not backend:  # made here from a name: stop its workers
            runner.close()
    _raise_failures(results)
    draws, laplace = np.stack([r.draws for r in results]), stacked_laplace(results)
    with clock.phase("combine"):
        named, unconstrained, info = combine_results(
            draws, probe.layout, method, space, seed, dict(combine_options or {}), laplace)
    with clock.phase("deterministics"):
        derived, shard_moments = deterministics_with_shard_moments(model, probe, named, draws)
    named.update(derived)
    with clock.phase("mc_error"):
        mean_error = _mean_error(draws, laplace, unconstrained, method, space, seed, info,
                                 combine_options, probe.layout.coordinate_names())
    with clock.phase("diagnostics"):
        stats = {s: np.stack([r.sample_stats[s] for r in results]) for s in SHARD_STAT_NAMES}
        diag = stack_diagnostics([_diagnosed(r, diag_parts, config.max_tree_depth)
                                  for r in results])
    log.info("fit phases (s): %s", ", ".join(f"{k} {v:.2f}" for k, v in clock.seconds.items()))
    provenance = {
        "seed": seed, "num_shards": num_shards, "num_points": int(observations.sum()),
        "num_rows": n, "sharding": sharding,
        "shard_sizes": observations.tolist(), "shard_rows": layout.sizes.tolist(),
        "space": space,
        "method": method if isinstance(method, str) else getattr(method, "__name__", "custom"),
        "combine_info": info, "sampler": dataclasses.asdict(config),
        "plan": dataclasses.asdict(plan), "backend": runner.capabilities.name,
        "backend_choice": None if choice is None else {
            "requested": "auto", "name": choice.name, "reason": choice.reason},
        "shard_stats": [r.stats.to_dict() for r in results],
        "latent_sites": list(probe.layout.names),
        "deterministic_skipped": list(probe.deterministic_skipped),
        "versions": _versions(),
        "on_shard_failure": on_shard_failure, "excluded_shards": excluded,
        "shards_used": [r.index for r in results], "prior_scale": 1.0 / len(results),
        "shard_constrained": constrained_shard_means(probe.layout, draws),
        "shard_deterministic": shard_moments, "combine_mc_error": mean_error,
        "phase_seconds": clock.seconds,
    }
    return Posterior(samples=named, unconstrained=unconstrained,
                     coords=probe.layout.coordinate_names(), shard_draws=draws,
                     shard_stats=stats, diagnostics=diag, provenance=provenance,
                     shard_laplace=laplace)
