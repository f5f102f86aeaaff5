"""All shards of a run in one compiled program, spread over JAX devices.

Per-shard NUTS (:func:`shardmc.core.nuts.warmup_chain`, then :func:`shardmc.core.nuts.sample_chain`)
is vmapped over chains and over shards, and the shard axis is split over a 1-D device
mesh with ``jax.shard_map``: each device runs its block of shards independently (no
collective inside NUTS' while loops). With one device the mesh has one member and the
program is the plain vmapped one. Good for many small shards, and for GPUs.

Results match :func:`shardmc.core.sampling.run_shard`'s: the same keys (``split(shard key,
chains)``), the same first-attempt settings, and the same ``ShardResult`` assembly. The
vmapped program may differ from the one-chain-at-a-time program in the last bits (XLA
fuses the batched arithmetic differently); it is bit-identical to itself across runs on
the same devices. Shards whose first attempt is non-finite or too divergent continue with
``run_shard``'s retry ladder in this process.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from shardmc.backends.base import BackendCapabilities
from shardmc.backends.resources import Workload, check_count, workload_memory
from shardmc.core import nuts, sampling
from shardmc.core.progress import STARTED, ShardEvent

log = logging.getLogger(__name__)

#: Name of the mesh axis the shards are split over.
SHARD_AXIS = "shards"
_B, _R = PartitionSpec(SHARD_AXIS), PartitionSpec()


def _warmup_batch(program, keys, data, mask, prior_scale, model_kwargs, init_values, target):
    chains = jax.vmap(functools.partial(nuts.warmup_chain, program),
                      (0, None, None, None, None, None, None))
    shards = jax.vmap(chains, (0, 0, 0, 0, None, None, None))
    return shards(keys, data, mask, prior_scale, model_kwargs, init_values, target)


def _sample_batch(program, z, step, inv_mass, key, data, mask, prior_scale, model_kwargs,
                  init_values):
    chains = jax.vmap(functools.partial(nuts.sample_chain, program),
                      (0, 0, 0, 0, None, None, None, None, None))
    shards = jax.vmap(chains, (0, 0, 0, 0, 0, 0, 0, None, None))
    return shards(z, step, inv_mass, key, data, mask, prior_scale, model_kwargs, init_values)


@functools.lru_cache(maxsize=16)
def _programs(program: nuts.ShardProgram, mesh: Mesh) -> tuple[Callable, Callable]:
    """Jitted warmup and sampling over a (shards, chains) batch split over ``mesh``."""
    warm = jax.shard_map(functools.partial(_warmup_batch, program), mesh=mesh,
                         in_specs=(_B, _B, _B, _B, _R, _R, _R), out_specs=_B, check_vma=False)
    samp = jax.shard_map(functools.partial(_sample_batch, program), mesh=mesh,
                         in_specs=(_B, _B, _B, _B, _B, _B, _B, _R, _R), out_specs=_B,
                         check_vma=False)
    return jax.jit(warm), jax.jit(samp)


def _group_key(spec: sampling.ShardSpec) -> tuple:
    shapes = tuple((k, np.shape(v), np.asarray(v).dtype.str) for k, v in spec.data.items())
    return (sampling._program(spec), shapes, np.shape(spec.mask), id(spec.model_kwargs),
            id(spec.init_values), spec.config, spec.plan)


class JaxBackend:
    """Every shard in one vmapped NUTS program over ``devices`` (default: all devices)."""

    def __init__(self, devices: int | Sequence[Any] | None = None) -> None:
        available = jax.devices()
        if devices is None:
            self.devices = list(available)
        elif isinstance(devices, int) and not isinstance(devices, bool):
            check_count(devices, "backend.devices", len(available),
                        f"the {jax.default_backend()} devices JAX sees")
            self.devices = list(available[:devices])
        else:
            self.devices = list(devices)
            check_count(len(self.devices) or 0, "backend.devices", len(available),
                        "the devices JAX sees")
        self.mesh = Mesh(np.array(self.devices), (SHARD_AXIS,))
        self.capabilities = BackendCapabilities(
            name="jax", parallel_shards=len(self.devices), multi_device=len(self.devices) > 1,
            reports_events=True)
        self.last_run: dict[str, Any] = {}

    def validate_resources(self) -> None:
        """Devices were checked against ``jax.devices()`` at construction."""

    def estimate_memory(self, workload: Workload) -> int:
        """Peak host bytes: one process holding every shard (CPU devices share host memory)."""
        if self.devices[0].platform != "cpu":
            return workload_memory(workload, processes=1, shards_at_once=1)
        return workload_memory(workload, processes=1, shards_at_once=workload.num_shards)

    def close(self) -> None:
        """Nothing to release (compiled programs stay in JAX's cache)."""

    def __enter__(self) -> JaxBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(self, fn: Callable[[Any], Any], specs: Iterable[Any], *,
            on_event: Callable[[ShardEvent], None] | None = None) -> Iterator[Any]:
        """Yield a result per spec. ``fn`` must be ``run_shard`` to batch; any other
        function runs spec by spec in this process."""
        emit = on_event or (lambda e: None)
        specs = list(specs)
        if fn is not sampling.run_shard:
            for spec in specs:
                emit(ShardEvent(STARTED, getattr(spec, "index", -1)))
                yield fn(spec)
            return
        groups: dict[tuple, list] = {}
        for spec in specs:
            groups.setdefault(_group_key(spec), []).append(spec)
        t0 = time.perf_counter()
        for group in groups.values():
            for spec in group:
                emit(ShardEvent(STARTED, spec.index))
            yield from self._run_group(group)
        self.last_run = {"shards": len(specs), "groups": len(groups),
                         "devices": len(self.devices), "wall_seconds": time.perf_counter() - t0}

    def _run_group(self, specs: list) -> Iterator[Any]:
        try:
            warm, out, t_warm, t_samp = self._batched(specs)
        except Exception as exc:  # a model error: attribute it shard by shard
            log.warning("jax backend: batched run failed (%s: %s); running shards one by one",
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            for spec in specs:
                yield sampling.run_shard(spec)
            return
        per_device = math.ceil(len(specs) / len(self.devices))
        target = specs[0].config.target_accept_prob
        for k, spec in enumerate(specs):
            first = sampling._attempt_result(
                spec, tuple(a[k] for a in warm), tuple(a[k] for a in out),
                t_warm / per_device, t_samp / per_device, 0, target)
            if not first.ok or first.stats.divergence_rate > spec.config.divergence_threshold:
                first = sampling.run_shard(spec, first=first)
            yield first

    def _batched(self, specs: list):
        """Attempt 0 of every shard in one program; numpy outputs with a leading shard axis."""
        n_dev, spec0 = len(self.devices), specs[0]
        padded = specs + [specs[-1]] * (-len(specs) % n_dev)  # equal blocks per device
        chains = spec0.plan.n_chains
        keys = np.stack([np.asarray(jax.random.split(
            jax.numpy.asarray(s.seed_key, dtype=np.uint32), chains)) for s in padded])
        data = {k: np.stack([s.data[k] for s in padded]) for k in spec0.data}
        mask = np.stack([s.mask for s in padded])
        prior = np.array([s.prior_scale for s in padded], dtype=np.float64)
        target = np.float64(spec0.config.target_accept_prob)
        warmup, sample = _programs(sampling._program(spec0), self.mesh)
        t0 = time.perf_counter()
        warm = jax.block_until_ready(warmup(keys, data, mask, prior, spec0.model_kwargs,
                                            spec0.init_values, target))
        t1 = time.perf_counter()
        out = jax.block_until_ready(sample(*warm[:4], data, mask, prior, spec0.model_kwargs,
                                           spec0.init_values))
        t2 = time.perf_counter()
        warm_np = tuple(np.asarray(a) for a in warm)
        out_np = tuple(np.asarray(a) for a in out)
        return warm_np, out_np, t1 - t0, t2 - t1
