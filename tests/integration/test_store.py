"""The run store: atomic shard files that round-trip exactly, and fit(lookup=...) reuse."""

import json

import numpy as np
import pytest

import shardmc
from shardmc.core.sampling import ShardResult
from shardmc.errors import ShardMCInputError
from shardmc.examples import linear_regression_data, linear_regression_known_noise
from shardmc.workflow.store import (
    MANIFEST_FILE,
    RunStore,
    shard_file_name,
)

SMALL = {"num_chains": 2, "num_warmup": 100, "num_samples": 100, "adaptive_sampling": False}
K = 3


class NeverCalledBackend:
    """A backend that fails the test if any shard is sent to it."""

    capabilities = shardmc.BackendCapabilities("never")

    def map(self, fn, specs):
        specs = list(specs)
        raise AssertionError(f"backend called for shards {[s.index for s in specs]}")

    def close(self):
        pass


@pytest.fixture(scope="module")
def data():
    return linear_regression_data(600, 2, seed=3)


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory, data):
    store = RunStore.create(tmp_path_factory.mktemp("run"))
    store.write_manifest({"num_shards": K})
    post = shardmc.fit(linear_regression_known_noise, data, K, seed=4,
                       on_shard_done=store.write_shard, **SMALL)
    return store, post


def test_every_shard_is_on_disk_and_in_the_manifest(stored_run):
    store, _ = stored_run
    assert store.finished_shards() == [shard_file_name(k, K) for k in range(K)]
    shards = json.loads((store.path / MANIFEST_FILE).read_text())["shards"]
    assert [(s["index"], s["of"], s["status"]) for s in shards] == [(k, K, "ok")
                                                                     for k in range(K)]
    assert not list(store.shard_dir.glob(".*"))  # no temporary files left behind


def test_shard_files_round_trip_exactly(stored_run):
    store, post = stored_run
    for k in range(K):
        result = store.read_shard(k, K)
        assert isinstance(result, ShardResult) and result.ok and result.index == k
        assert np.array_equal(result.draws, post.shard_draws[k])
        assert result.prior_scale == pytest.approx(1 / K)
        assert result.stats.num_divergent >= 0


def test_fit_with_lookup_reuses_every_shard_bit_for_bit(stored_run, data):
    store, post = stored_run
    again = shardmc.fit(linear_regression_known_noise, data, K, seed=4,
                        backend=NeverCalledBackend(), lookup=store.lookup, **SMALL)
    assert np.array_equal(again.unconstrained, post.unconstrained)


def test_fit_with_lookup_runs_only_missing_shards(stored_run, data, tmp_path):
    store, post = stored_run
    partial = RunStore.create(tmp_path / "partial")
    partial.write_manifest({})
    for k in (0, 2):
        partial.write_shard(store.read_shard(k, K))
    ran = []
    again = shardmc.fit(linear_regression_known_noise, data, K, seed=4,
                        on_shard_done=lambda r: ran.append(r.index), lookup=partial.lookup,
                        **SMALL)
    assert ran == [1]
    assert np.array_equal(again.unconstrained, post.unconstrained)


def test_failed_shards_are_not_kept(tmp_path):
    store = RunStore.create(tmp_path / "r")
    store.write_manifest({})
    store.write_shard(ShardResult(index=0, status="failed", error="boom", prior_scale=0.5))
    assert store.read_shard(0, 2).status == "failed"
    assert store.lookup(0, 0.5) is None


def test_corrupted_shard_file_names_the_file(stored_run, tmp_path):
    store = RunStore.create(tmp_path / "bad")
    store.write_manifest({})
    path = store.shard_path(1, K)
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ShardMCInputError, match=r"shard-00001-of-00003\.npz: corrupted"):
        store.lookup(1, 1 / K)


def test_create_refuses_a_non_empty_directory_unless_forced(tmp_path):
    (tmp_path / "x.txt").write_text("keep me")
    with pytest.raises(ShardMCInputError, match=r"not empty.*resume.*--force"):
        RunStore.create(tmp_path)
    RunStore.create(tmp_path, force=True)
    assert (tmp_path / "x.txt").exists()  # --force clears only the store's own files


def test_open_needs_a_manifest(tmp_path):
    with pytest.raises(ShardMCInputError, match=r"manifest\.json"):
        RunStore.open(tmp_path)
