"""Fault handling of the processes backend with real processes: a worker killed with
SIGKILL mid-shard, a hanging shard, a frozen worker, and a model error in one shard."""

from __future__ import annotations

import os

import fault_models
import numpy as np
import pytest

import shardmc
from shardmc.backends import ProcessesBackend
from shardmc.core.progress import RETRY
from shardmc.errors import ShardFailedError

NUM_POINTS, NUM_SHARDS = 800, 4
SAMPLER = {"num_warmup": 100, "num_samples": 100, "num_chains": 2}


@pytest.fixture(scope="module")
def fault_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def backend(fault_dir):
    """Two workers shared by the model-fault tests (they compile the model once)."""
    with ProcessesBackend(workers=2, shard_timeout=300,
                          env={fault_models.FAULT_DIR_ENV: str(fault_dir)}) as b:
        yield b


def _fit(data, backend):
    return shardmc.fit(fault_models.faulty_regression, data, NUM_SHARDS, seed=2,
                       sharding="contiguous", backend=backend, **SAMPLER)


def test_worker_killed_mid_shard_is_replaced_and_the_run_completes(backend, fault_dir):
    data = fault_models.faulty_data(NUM_POINTS, NUM_SHARDS, shard=2,
                                    code=fault_models.KILL_ONCE)
    post = _fit(data, backend)
    assert (fault_dir / "killed").exists()  # the worker did die mid-shard
    assert post.num_shards == NUM_SHARDS
    assert backend.last_run["retries"] == 1
    assert backend.last_run["workers_replaced"] == 1
    assert all(s["attempts"] == 1 for s in post.provenance["shard_stats"])
    # The retried shard reproduces what an undisturbed run gives, bit for bit.
    undisturbed = _fit(data, backend)  # the marker exists now: nobody is killed
    assert backend.last_run["retries"] == 0
    assert np.array_equal(post.unconstrained, undisturbed.unconstrained)


def test_model_error_in_one_shard_reaches_the_user(backend):
    data = fault_models.faulty_data(NUM_POINTS, NUM_SHARDS, shard=1, code=fault_models.RAISE)
    with pytest.raises(ShardFailedError) as info:
        _fit(data, backend)
    message = str(info.value)
    assert "1 of 4 shards failed" in message
    assert f"shard 1: failed: ValueError: {fault_models.INJECTED}" in message


@pytest.mark.parametrize("fn, limits, cause", [
    (fault_models.hang_or_checksum, {"shard_timeout": 3.0}, "timeout"),
    (fault_models.freeze_or_checksum,
     {"shard_timeout": None, "heartbeat_interval": 0.5, "heartbeat_timeout": 3.0},
     "no heartbeat"),
])
def test_stuck_shard_is_retried_then_recorded_as_failed(fn, limits, cause):
    specs = fault_models.regression_specs()
    events = []
    with ProcessesBackend(workers=2, max_retries=1, compile_cache=False,
                          env={fault_models.FAULT_INDEX_ENV: "1"}, **limits) as backend:
        results = {r.index: r for r in backend.map(fn, specs, on_event=events.append)}
        stats = backend.last_run
    assert sorted(results) == [0, 1, 2]
    failed = results[1]
    assert failed.status == "failed"
    assert cause in failed.error and "failed after 2 attempt(s)" in failed.error
    assert [e.index for e in events if e.kind == RETRY] == [1]
    assert stats["retries"] == 1 and stats["workers_replaced"] == 2
    for k in (0, 2):  # the others arrived intact through shared memory
        spec = specs[k]
        expected = sum(float(v[spec.mask].sum()) for v in spec.data.values())
        assert results[k].ok and results[k].draws[0, 0, 0] == pytest.approx(expected, rel=1e-12)
    assert not [p for p in os.listdir("/dev/shm") if p.startswith(f"shardmc_{os.getpid()}_")]
