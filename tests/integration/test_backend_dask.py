"""The dask backend on a real LocalCluster (2 worker processes on 127.0.0.1): bit-identity
with the sequential backend, a worker SIGKILLed mid-shard, a model error, a hanging shard,
the workers' environment, and TLS with certificate files."""

from __future__ import annotations

import os
import subprocess

import fault_models
import numpy as np
import pytest

pytest.importorskip("distributed")

import shardmc
from shardmc import examples
from shardmc.backends.dask_cluster import DaskBackend
from shardmc.errors import ShardFailedError

#: 2 shards of 40 000 points: big enough that XLA splits reductions over threads, which
#: is where a worker's thread setup could change the last bits.
NUM_POINTS, NUM_SHARDS = 80_000, 2
SAMPLER = {"num_warmup": 100, "num_samples": 100, "num_chains": 2}
FAULT_POINTS, FAULT_SHARDS = 800, 4


@pytest.fixture(scope="module")
def fault_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("dask-faults")


@pytest.fixture(scope="module")
def backend(fault_dir):
    """Two LocalCluster workers shared by the tests below. Spawned workers inherit the
    driver's environment at start, which is how the fault folder reaches them."""
    saved = os.environ.get(fault_models.FAULT_DIR_ENV)
    os.environ[fault_models.FAULT_DIR_ENV] = str(fault_dir)
    try:
        with DaskBackend(workers=2, max_retries=2) as b:
            b.start()
            yield b
    finally:
        if saved is None:
            os.environ.pop(fault_models.FAULT_DIR_ENV, None)
        else:
            os.environ[fault_models.FAULT_DIR_ENV] = saved


def _fit(model, data, num_shards, backend, **kw):
    return shardmc.fit(model, data, num_shards, seed=5, backend=backend, **SAMPLER, **kw)


def test_dask_bit_identical_to_sequential(backend):
    data = examples.linear_regression_data(NUM_POINTS, 3, seed=11)
    model = examples.linear_regression_known_noise
    reference = _fit(model, data, NUM_SHARDS, "sequential")
    first = _fit(model, data, NUM_SHARDS, backend)
    again = _fit(model, data, NUM_SHARDS, backend)  # same cluster, programs compiled
    for post in (first, again):
        assert np.array_equal(post.unconstrained, reference.unconstrained)
        assert np.array_equal(post.shard_draws, reference.shard_draws)
    assert first.provenance["backend"] == "dask"
    assert backend.last_run["shards"] == NUM_SHARDS and backend.last_run["retries"] == 0
    assert sum(w["shards"] for w in backend.last_run["workers"].values()) == NUM_SHARDS
    assert backend.client.scheduler.address.startswith("tcp://127.0.0.1:")


def test_workers_get_the_shardmc_environment(backend):
    before = dict(os.environ)
    facts = list(backend.map(fault_models.worker_facts, [{"tag": 0}, {"tag": 1}]))
    assert dict(os.environ) == before  # the driver's environment is untouched
    for fact in facts:
        env = fact["env"]
        assert fact["x64"] and env["JAX_ENABLE_X64"] == "1" and env["JAX_PLATFORMS"] == "cpu"
        assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "1"
        assert env.get("XLA_FLAGS") == before.get("XLA_FLAGS")
    info = backend.client.scheduler_info()
    assert all(w["nthreads"] == 1 for w in info["workers"].values())
    assert all(addr.startswith("tcp://127.0.0.1:") for addr in info["workers"])


def test_address_connects_to_a_running_cluster_and_leaves_it_running(backend):
    address = backend.client.scheduler.address
    with DaskBackend(address=address) as remote:
        assert remote.cluster is None and remote.capabilities.parallel_shards == 1
        facts = list(remote.map(fault_models.worker_facts, [{"tag": 0}, {"tag": 1}]))
    assert sorted(f["tag"] for f in facts) == [0, 1]
    assert len(backend.client.scheduler_info()["workers"]) == 2  # still there


def test_worker_killed_mid_shard_the_run_still_completes(backend, fault_dir):
    data = fault_models.faulty_data(FAULT_POINTS, FAULT_SHARDS, shard=2,
                                    code=fault_models.KILL_ONCE)
    post = _fit(fault_models.faulty_regression, data, FAULT_SHARDS, backend,
                sharding="contiguous")
    assert (fault_dir / "killed").exists()  # a worker did die (SIGKILL) mid-shard
    assert post.num_shards == FAULT_SHARDS
    assert backend.last_run["retries"] >= 1
    # The rerun shard reproduces what an undisturbed run gives, bit for bit.
    undisturbed = _fit(fault_models.faulty_regression, data, FAULT_SHARDS, backend,
                       sharding="contiguous")
    assert backend.last_run["retries"] == 0
    assert np.array_equal(post.unconstrained, undisturbed.unconstrained)


def test_model_error_in_one_shard_reaches_the_user(backend):
    data = fault_models.faulty_data(FAULT_POINTS, FAULT_SHARDS, shard=1,
                                    code=fault_models.RAISE)
    with pytest.raises(ShardFailedError) as info:
        _fit(fault_models.faulty_regression, data, FAULT_SHARDS, backend,
             sharding="contiguous")
    message = str(info.value)
    assert "1 of 4 shards failed" in message
    assert f"shard 1: failed: ValueError: {fault_models.INJECTED}" in message
    assert backend.last_run["retries"] == 0  # model errors are not rerun by dask


def test_hanging_shard_times_out_and_the_others_arrive(monkeypatch):
    monkeypatch.setenv(fault_models.FAULT_INDEX_ENV, "1")  # inherited by the new worker
    specs = fault_models.regression_specs(3)
    with DaskBackend(workers=1, max_retries=0, shard_timeout=3.0) as backend:
        results = {r.index: r for r in backend.map(fault_models.hang_or_checksum, specs)}
        assert backend.last_run["timeouts"] == 1
    assert sorted(results) == [0, 1, 2]
    assert not results[1].ok and "timeout" in results[1].error
    for k in (0, 2):  # the arrays arrived intact through scatter
        spec = specs[k]
        expected = sum(float(v[spec.mask].sum()) for v in spec.data.values())
        assert results[k].ok and results[k].draws[0, 0, 0] == pytest.approx(expected)


def _tls_files(folder) -> dict[str, str]:
    """A throwaway CA and one certificate signed by it (openssl)."""
    ca_key, ca, key, csr, cert = (str(folder / n) for n in
                                  ("ca.key", "ca.pem", "tls.key", "tls.csr", "tls.pem"))
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
        "-out", ca, "-days", "1", "-subj", "/CN=shardmc-test-ca")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
        "-subj", "/CN=127.0.0.1")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
        "-CAcreateserial", "-out", cert, "-days", "1")
    return {"ca_file": ca, "cert": cert, "key": key}


def test_tls_between_scheduler_and_workers(tmp_path, monkeypatch):
    if subprocess.run(["which", "openssl"], capture_output=True).returncode:
        pytest.skip("openssl not installed")
    monkeypatch.setenv(fault_models.FAULT_INDEX_ENV, "-1")
    files = _tls_files(tmp_path)
    specs = fault_models.regression_specs(2)
    with DaskBackend(workers=1, security=files) as backend:
        results = list(backend.map(fault_models.hang_or_checksum, specs))
        assert backend.client.scheduler.address.startswith("tls://127.0.0.1:")
        workers = backend.client.scheduler_info()["workers"]
        assert all(addr.startswith("tls://127.0.0.1:") for addr in workers)
    assert sorted(r.index for r in results) == [0, 1] and all(r.ok for r in results)
