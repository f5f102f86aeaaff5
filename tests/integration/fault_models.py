"""Models and shard functions that misbehave on purpose, for the processes-backend tests.

Spawned workers import this module by name: the processes backend gives each worker the
driver's ``sys.path``, and pytest puts this folder on it (rootdir-relative imports), just
as multiprocessing's spawn start method would. Keeping these helpers out of
``shardmc.examples`` keeps deliberately broken code out of the installed package.

Faults are triggered by data (a per-point ``fault`` column, so exactly the chosen shard
misbehaves when sharding is contiguous) or by an environment variable that only the
workers get (``ProcessesBackend(env=...)``), so the driver's own model probe is safe.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from shardmc import examples
from shardmc.core.sampling import SamplerConfig, SamplingPlan, ShardResult, ShardSpec, shard_key

#: Folder where kill-once markers live (set in the workers' environment).
FAULT_DIR_ENV = "SHARDMC_TEST_FAULT_DIR"
#: Shard index that :func:`hang_or_checksum` / :func:`freeze_or_checksum` misbehave on.
FAULT_INDEX_ENV = "SHARDMC_TEST_FAULT_INDEX"
#: Fault codes in the ``fault`` data column.
NONE, RAISE, KILL_ONCE = 0, 1, 2
#: Text of the injected model error.
INJECTED = "fault_models: injected failure"
#: Seconds a hanging shard sleeps (far beyond any test timeout).
HANG_SECONDS = 600


def _act(code) -> None:
    code = int(code)
    if code == RAISE:
        raise ValueError(f"{INJECTED} (fault code {code})")
    if code == KILL_ONCE:
        marker = Path(os.environ[FAULT_DIR_ENV]) / "killed"
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return  # killed before: the retry runs normally
        os.kill(os.getpid(), signal.SIGKILL)


def faulty_regression(x, fault, y=None):
    """:func:`shardmc.examples.linear_regression_known_noise` plus a host callback that
    raises (code 1) or SIGKILLs its own process once (code 2) while sampling a shard
    whose ``fault`` column holds that code."""
    jax.debug.callback(_act, jnp.max(fault))
    examples.linear_regression_known_noise(x, y)


def faulty_data(num_points: int, num_shards: int, shard: int, code: int) -> dict:
    """Regression data whose rows of ``shard`` (under contiguous sharding) carry ``code``."""
    data = examples.linear_regression_data(num_points, 3, seed=7)
    fault = np.zeros(num_points)
    fault[np.array_split(np.arange(num_points), num_shards)[shard]] = code
    return {**data, "fault": fault}


def _checksum(spec) -> ShardResult:
    total = sum(float(np.asarray(v)[np.asarray(spec.mask)].sum()) for v in spec.data.values())
    return ShardResult(index=spec.index, status="ok", draws=np.array([[[total]]]),
                       num_points=spec.num_points)


def hang_or_checksum(spec) -> ShardResult:
    """Sleep forever on the chosen shard; elsewhere return the sum of the shard's real
    data (which proves the arrays arrived intact through shared memory)."""
    if spec.index == int(os.environ[FAULT_INDEX_ENV]):
        time.sleep(HANG_SECONDS)
    return _checksum(spec)


def freeze_or_checksum(spec) -> ShardResult:
    """Stop the whole worker (SIGSTOP: no more heartbeats) on the chosen shard."""
    if spec.index == int(os.environ[FAULT_INDEX_ENV]):
        os.kill(os.getpid(), signal.SIGSTOP)
    return _checksum(spec)


def worker_facts(spec: dict) -> dict:
    """What a worker's bootstrap set up, as seen from inside the worker."""
    return {"x64": bool(jax.config.jax_enable_x64), "env": dict(os.environ),
            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None, "pid": os.getpid(), "tag": spec["tag"],
            "threads_affinity": _thread_affinities()}


def _thread_affinities() -> list:
    if not hasattr(os, "sched_getaffinity"):
        return []
    try:
        return [sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")]
    except OSError:
        return []


def regression_specs(num_shards: int = 3) -> list[ShardSpec]:
    """Specs of ``num_shards`` small regression shards (100 points, 90 + k unmasked) for
    driving a backend's ``map`` directly."""
    data = examples.linear_regression_data(100 * num_shards, 2, seed=3)
    plan = SamplingPlan(100, 100, 1, 100, 2, False)
    return [ShardSpec(index=k, model=examples.linear_regression_known_noise,
                      data={n: a[k * 100:(k + 1) * 100] for n, a in data.items()},
                      mask=np.arange(100) < 90 + k, model_kwargs={}, prior_scale=1 / num_shards,
                      seed_key=shard_key(0, k), config=SamplerConfig(), plan=plan,
                      observed_sites=frozenset({"y"}))
            for k in range(num_shards)]
