"""Per-shard NUTS: the sampling plan, retries and the statistics of each shard's run.

:func:`run_shard` is a pure, picklable top-level function ``ShardSpec -> ShardResult``;
the backends map it over shards.
"""

from __future__ import annotations

import dataclasses
import re
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from shardmc.core import nuts

#: Divergence-rate levels (fraction of post-warmup transitions): below TARGET is good,
#: above HIGH the shard is retried and then counts as failed, above CRITICAL it is unusable.
DIVERGENCE_RATE_TARGET = 0.05
DIVERGENCE_RATE_HIGH = 0.10
DIVERGENCE_RATE_CRITICAL = 0.30

#: Shard size (points) at and above which the configured warmup/sample counts apply unscaled.
ADAPTIVE_FULL_SIZE = 10_000
#: Per-parameter floors of the adaptive plan: warmup >= 20 p, samples >= 50 p.
WARMUP_PER_PARAM = 20
SAMPLES_PER_PARAM = 50
#: Retries raise target_accept_prob by this step, up to RETRY_MAX_TARGET_ACCEPT.
RETRY_TARGET_ACCEPT_STEP = 0.05
RETRY_MAX_TARGET_ACCEPT = 0.95

INIT_STRATEGIES = ("median", "sample", "value")
INIT_MASS = ("hessian", "identity")
CHAIN_METHODS = ("sequential", "vectorized")


@dataclass(frozen=True)
class SamplerConfig:
    """Per-shard NUTS settings (counts are per chain)."""

    num_warmup: int = 500
    num_samples: int = 1500
    num_chains: int = 4
    adaptive_sampling: bool = True
    min_warmup: int = 100
    min_samples: int = 200
    target_accept_prob: float = 0.85
    max_tree_depth: int = 10
    dense_mass: bool = True
    init_strategy: str = "median"
    init_mass: str = "hessian"
    adapt_mass_matrix: bool = True
    chain_method: str = "sequential"
    max_attempts: int = 3
    divergence_threshold: float = DIVERGENCE_RATE_HIGH
    #: Compute each shard's Laplace precision at its posterior mean (one Hessian, one more
    #: compiled program per shard shape): the consensus weights' shrinkage target.
    laplace_target: bool = True


@dataclass(frozen=True)
class SamplingPlan:
    """The warmup and sample counts actually used for a shard after adaptive scaling."""

    n_warmup: int
    n_samples: int
    n_chains: int
    shard_size: int
    n_params: int
    was_adapted: bool

    @classmethod
    def from_config(cls, config: SamplerConfig, shard_size: int, n_params: int) -> SamplingPlan:
        """Scale counts down for small shards (seed table: 50 pts -> 140/350, 5 K -> 250/750,
        50 K+ -> 500/1500 with 7 parameters); never above the configured counts."""
        w, s = config.num_warmup, config.num_samples
        if not config.adaptive_sampling:
            return cls(w, s, config.num_chains, shard_size, n_params, False)
        scale = min(1.0, shard_size / ADAPTIVE_FULL_SIZE)
        warm = max(min(max(config.min_warmup, WARMUP_PER_PARAM * n_params), w), int(w * scale))
        samp = max(min(max(config.min_samples, SAMPLES_PER_PARAM * n_params), s), int(s * scale))
        warm, samp = min(warm, w), min(samp, s)
        return cls(warm, samp, config.num_chains, shard_size, n_params, (warm, samp) != (w, s))

    @property
    def total_samples(self) -> int:
        return self.n_samples * self.n_chains


@dataclass(frozen=True)
class SamplingStats:
    """Timing (s) and NUTS statistics of one shard's accepted attempt."""

    warmup_time: float = 0.0
    sampling_time: float = 0.0
    total_time: float = 0.0
    num_divergent: int = 0
    divergence_rate: float = 0.0
    warmup_divergences: int = 0
    accept_prob: float = 0.0
    step_size: float = 0.0
    step_size_min: float | None = None
    step_size_max: float | None = None
    inverse_mass_matrix_summary: str | None = None
    tree_depth: float = 0.0
    tree_depth_saturation: float = 0.0
    attempts: int = 1
    target_accept_prob: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ShardSpec:
    """Everything one shard's run needs; plain data plus a top-level model, so picklable."""

    index: int
    model: Any
    data: dict[str, np.ndarray]
    mask: np.ndarray
    model_kwargs: dict[str, Any]
    prior_scale: float
    seed_key: np.ndarray
    config: SamplerConfig
    plan: SamplingPlan
    observed_sites: frozenset
    init_values: dict[str, Any] = field(default_factory=dict)
    padded: bool = True

    @property
    def num_points(self) -> int:
        return int(self.mask.sum())


@dataclass
class ShardResult:
    """A shard's unconstrained draws (chains, samples, d), NUTS statistics and status."""

    index: int
    status: str  # "ok" | "failed"
    draws: np.ndarray | None = None
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    stats: SamplingStats = field(default_factory=SamplingStats)
    num_points: int = 0
    error: str | None = None
    #: Prior scale (1/K') the shard was sampled at; the engine stamps it as results arrive.
    prior_scale: float | None = None
    #: Hessian (d, d) of the shard's potential at its posterior mean (Laplace precision),
    #: the noise-free shrinkage target of the consensus weights; None if not finite.
    laplace_precision: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def shard_key(seed: int, index: int) -> np.ndarray:
    """Shard ``index``'s PRNG key: ``fold_in(PRNGKey(seed), index)`` as raw uint32 data."""
    return np.asarray(jax.random.fold_in(jax.random.PRNGKey(seed), index))


def _program(spec: ShardSpec) -> nuts.ShardProgram:
    return nuts.ShardProgram(
        model=spec.model,
        observed_sites=spec.observed_sites,
        init_strategy=spec.config.init_strategy,
        num_warmup=spec.plan.n_warmup,
        num_samples=spec.plan.n_samples,
        dense_mass=spec.config.dense_mass,
        max_tree_depth=spec.config.max_tree_depth,
        masked=spec.padded,
        init_mass=spec.config.init_mass,
        adapt_mass=spec.config.adapt_mass_matrix,
    )


def _run_chains(spec: ShardSpec, key: jax.Array, target_accept: float):
    """Run all chains of one attempt; returns (outputs stacked over chains, t_warm, t_samp)."""
    program = _program(spec)
    # Rows picked on the host: indexing a device array would compile two more small
    # programs (dynamic_slice, squeeze) in every fresh worker process.
    keys = np.asarray(jax.random.split(key, spec.plan.n_chains))
    common = (spec.data, spec.mask, np.float64(spec.prior_scale), spec.model_kwargs)
    if spec.config.chain_method == "vectorized":
        t0 = time.perf_counter()
        warm = jax.block_until_ready(nuts.warmup_program_chains(
            program, keys, *common, spec.init_values, np.float64(target_accept)))
        t1 = time.perf_counter()
        out = jax.block_until_ready(nuts.sample_program_chains(
            program, *warm[:4], *common, spec.init_values))
        t2 = time.perf_counter()
        return warm, out, t1 - t0, t2 - t1
    warms, outs, t_warm, t_samp = [], [], 0.0, 0.0
    for c in range(spec.plan.n_chains):
        t0 = time.perf_counter()
        warm = jax.block_until_ready(nuts.warmup_program(
            program, keys[c], *common, spec.init_values, np.float64(target_accept)))
        t1 = time.perf_counter()
        out = jax.block_until_ready(nuts.sample_program(
            program, *warm[:4], *common, spec.init_values))
        t_warm, t_samp = t_warm + t1 - t0, t_samp + time.perf_counter() - t1
        warms.append(warm)
        outs.append(out)
    stack = lambda xs: jax.tree.map(lambda *a: np.stack(a), *xs)  # noqa: E731
    return stack(warms), stack(outs), t_warm, t_samp


def _mass_summary(inv_mass: np.ndarray) -> str:
    diag = np.diagonal(inv_mass, axis1=-2, axis2=-1) if inv_mass.ndim == 3 else inv_mass
    return f"diag min {diag.min():.3g}, median {np.median(diag):.3g}, max {diag.max():.3g}"


def _attempt_result(spec, warm, out, t_warm, t_samp, attempt, target) -> ShardResult:
    z, div, acc, steps, energy, pe = (np.asarray(a) for a in out)
    step_size, inv_mass = np.asarray(warm[1]), np.asarray(warm[2])
    depth = np.ceil(np.log2(steps + 1.0))
    n_div = int(div.sum())
    stats = SamplingStats(
        warmup_time=t_warm,
        sampling_time=t_samp,
        total_time=t_warm + t_samp,
        num_divergent=n_div,
        divergence_rate=n_div / div.size,
        warmup_divergences=int(np.asarray(warm[4]).sum()),
        accept_prob=float(acc.mean()),
        step_size=float(step_size.mean()),
        step_size_min=float(step_size.min()),
        step_size_max=float(step_size.max()),
        inverse_mass_matrix_summary=_mass_summary(inv_mass),
        tree_depth=float(depth.mean()),
        tree_depth_saturation=float((depth >= spec.config.max_tree_depth).mean()),
        attempts=attempt + 1,
        target_accept_prob=float(target),
    )
    sample_stats = {
        "diverging": div, "accept_prob": acc, "tree_depth": depth, "n_steps": steps,
        "energy": energy, "lp": -pe,
        "step_size": np.broadcast_to(step_size[:, None], div.shape).copy(),
    }
    finite = bool(np.isfinite(z).all() and np.isfinite(pe).all())
    return ShardResult(
        index=spec.index,
        status="ok" if finite else "failed",
        draws=z,
        sample_stats=sample_stats,
        stats=stats,
        num_points=spec.num_points,
        error=None if finite else "non-finite draws or log density",
        laplace_precision=(_laplace_at_mean(spec, z) if finite and spec.config.laplace_target
                           else None),
    )


def _laplace_at_mean(spec: ShardSpec, z: np.ndarray) -> np.ndarray | None:
    """Laplace precision (d, d) at the mean of the draws (C, S, d); None if not finite."""
    h = np.asarray(nuts.laplace_program(
        _program(spec), z.reshape(-1, z.shape[-1]).mean(axis=0), spec.data, spec.mask,
        np.float64(spec.prior_scale), spec.model_kwargs, spec.init_values))
    return h if np.isfinite(h).all() else None


def _better(a: ShardResult, b: ShardResult) -> bool:
    """Finite beats non-finite; among finite attempts, fewer divergences win."""
    if a.ok != b.ok:
        return a.ok
    return a.stats.divergence_rate < b.stats.divergence_rate


def run_nuts_with_retry(spec: ShardSpec, first: ShardResult | None = None) -> ShardResult:
    """Sample a shard; retry (key ``fold_in(key, attempt)``, target accept +0.05) while
    the draws are non-finite or the divergence rate exceeds the configured threshold.
    ``first``: the result of attempt 0 when it ran elsewhere (the ``jax`` backend)."""
    base_key = jax.numpy.asarray(spec.seed_key, dtype=np.uint32)
    best: ShardResult | None = None
    for attempt in range(spec.config.max_attempts):
        key = base_key if attempt == 0 else jax.random.fold_in(base_key, attempt)
        target = spec.config.target_accept_prob
        if attempt:
            target = max(target, min(RETRY_MAX_TARGET_ACCEPT,
                                     target + RETRY_TARGET_ACCEPT_STEP * attempt))
        if attempt == 0 and first is not None:
            result = first
        else:
            warm, out, t_warm, t_samp = _run_chains(spec, key, target)
            result = _attempt_result(spec, warm, out, t_warm, t_samp, attempt, target)
        if result.ok and result.stats.divergence_rate <= spec.config.divergence_threshold:
            return result
        if best is None or _better(result, best):
            best = result
    assert best is not None
    if best.ok:
        best.status = "divergent"
        best.error = (f"divergence rate {best.stats.divergence_rate:.1%} above the threshold "
                      f"{spec.config.divergence_threshold:.0%} after {spec.config.max_attempts} "
                      "attempts")
    return best


def run_shard(spec: ShardSpec, first: ShardResult | None = None) -> ShardResult:
    """Run one shard; any exception becomes a failed result carrying its traceback text.
    ``first``: see :func:`run_nuts_with_retry`."""
    try:
        return run_nuts_with_retry(spec, first)
    except Exception as exc:
        return ShardResult(
            index=spec.index,
            status="failed",
            num_points=spec.num_points,
            error=f"{error_summary(exc)}\n{type(exc).__name__}: {exc}\n{traceback.format_exc()}",
        )


_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit): ")


def error_summary(exc: BaseException) -> str:
    """One line naming the root cause. Errors raised inside JAX callbacks arrive wrapped
    (``JaxRuntimeError: INTERNAL: ... Traceback ...``); the last ``XError: message``
    line inside is the model's own error."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    inner = [ln for ln in lines[1:] if _EXC_LINE.match(ln)]
    return inner[-1] if inner else f"{type(exc).__name__}: {lines[0] if lines else ''}"
