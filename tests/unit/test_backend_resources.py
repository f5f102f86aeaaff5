"""Backend selection, resource checks, memory estimates, LPT order, worker setup."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import shardmc
from shardmc import examples
from shardmc.backends import (
    ProcessesBackend,
    SequentialBackend,
    Workload,
    backend_choice,
    choose_backend,
    select_backend,
    should_use_pool,
)
from shardmc.backends import resources as R
from shardmc.backends.cache import CACHE_MODE, compile_cache_dir
from shardmc.backends.lpt import cost_terms, lpt_order, shard_costs
from shardmc.backends.pool import core_sets, worker_environment
from shardmc.core.progress import RETRY, STARTED, ShardEvent, ShardProgress
from shardmc.core.sampling import ShardResult
from shardmc.errors import ShardMCInputError

SMALL = Workload(num_shards=2, shard_points=100, n_params=3, num_chains=2, num_warmup=100,
                 num_samples=100, point_bytes=32)
BIG = Workload(num_shards=16, shard_points=50_000, n_params=7, num_chains=4,
               num_warmup=500, num_samples=1500, point_bytes=32)


def test_import_sets_nothing_and_loads_no_jax():
    code = ("import os, sys; before = dict(os.environ); import shardmc.backends, "
            "shardmc.backends.worker; assert dict(os.environ) == before; "
            "assert 'jax' not in sys.modules, 'jax imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_should_use_pool_threshold():
    assert not should_use_pool(1, 2)
    assert not should_use_pool(8, 1)
    assert should_use_pool(2, 2)  # no estimate: any K >= 2 with 2 workers
    tiny = R.POOL_STARTUP_SECONDS / 100
    assert not should_use_pool(4, 2, shard_seconds=tiny)
    assert should_use_pool(4, 2, shard_seconds=R.POOL_STARTUP_SECONDS)


def test_auto_choice_follows_workload():
    assert choose_backend(None) == "sequential"
    assert choose_backend(SMALL) == "sequential"
    expected = "processes" if R.physical_cores() >= 2 else "sequential"
    assert choose_backend(BIG) == expected
    backend = select_backend("auto", workload=SMALL, workers=2)  # options it does not take
    assert isinstance(backend, SequentialBackend)


def test_auto_choice_gives_its_reason_and_needs_an_importable_model():
    small = backend_choice(SMALL)
    assert small.name == "sequential" and "less than the 3 s it takes to start" in small.reason
    if R.physical_cores() < 2:
        pytest.skip("one physical core: auto never picks a pool")
    big = backend_choice(BIG, examples.linear_regression_known_noise)
    assert big.name == "processes" and "workers on" in big.reason
    local = backend_choice(BIG, lambda **kw: None)
    assert local.name == "sequential" and "cannot import the model" in local.reason
    # frame rows carry many points each: the estimate counts points, not rows
    rows = Workload(num_shards=8, shard_points=100, n_params=7, num_chains=4, num_warmup=500,
                    num_samples=1500, point_bytes=8 * 400, shard_observations=20_000)
    assert backend_choice(rows).name == "processes"
    as_rows = dataclasses.replace(rows, shard_observations=None)
    assert backend_choice(as_rows).name == "sequential"


def test_fit_defaults_to_auto_and_records_the_choice():
    data = examples.linear_regression_data(200, 2, seed=0)
    post = shardmc.fit(examples.linear_regression_known_noise, data, 2, num_warmup=50,
                       num_samples=50, num_chains=1)
    choice = post.provenance["backend_choice"]
    assert choice["requested"] == "auto" and choice["name"] == post.provenance["backend"]
    assert choice["reason"]
    named = shardmc.fit(examples.linear_regression_known_noise, data, 2, backend="sequential",
                        num_warmup=50, num_samples=50, num_chains=1)
    assert named.provenance["backend_choice"] is None


def test_auto_drops_options_the_jax_backend_does_not_take(monkeypatch):
    import shardmc.backends as B
    from shardmc.backends.jax_devices import JaxBackend

    monkeypatch.setattr(B, "backend_choice",  # as on a GPU machine
                        lambda workload, model=None: B.BackendChoice("jax", "accelerator"))
    backend = select_backend("auto", workers=2, shard_timeout=10.0)
    assert isinstance(backend, JaxBackend)


def test_select_backend_rejects_unknown_names():
    with pytest.raises(ShardMCInputError, match="backend: expected one of"):
        select_backend("threads")


def test_more_workers_than_cores_is_refused():
    cores = R.usable_cores()
    with pytest.raises(ShardMCInputError, match=rf"backend.workers: expected at most {cores}"):
        ProcessesBackend(workers=cores + 1)
    with pytest.raises(ShardMCInputError, match=r"backend\.threads_per_worker"):
        ProcessesBackend(workers=1, threads_per_worker=cores + 1)
    with pytest.raises(ShardMCInputError, match=r"backend\.workers: expected an integer"):
        ProcessesBackend(workers=0)


def _local_model(x, y=None):
    examples.linear_regression_known_noise(x, y)


def test_models_workers_cannot_import_are_refused_before_sampling():
    backend = ProcessesBackend(workers=1)

    def main_model(x, y=None):
        examples.linear_regression_known_noise(x, y)

    main_model.__module__ = "__main__"
    main_model.__qualname__ = "main_model"
    with pytest.raises(ShardMCInputError, match="defined in the __main__ script"):
        shardmc.fit(main_model, examples.linear_regression_data(50, 2), 2, backend=backend)
    with pytest.raises(ShardMCInputError, match="lambda or a function defined inside"):
        backend.validate_model(lambda x, y=None: None)
    backend.validate_model(_local_model)  # a module-level function is fine
    assert backend._pool is None  # refused before any worker started
    backend.close()


def test_memory_estimate_grows_with_the_workload():
    base = R.estimate_memory(1000, 3, 2)
    assert R.estimate_memory(100_000, 3, 2) > base
    assert R.estimate_memory(1000, 3, 2, num_samples=100_000) > base
    assert base >= R.PROCESS_BASE_BYTES
    assert ProcessesBackend(workers=1).estimate_memory(BIG) > R.workload_memory(BIG)


def test_wide_rows_count_the_model_memory_profile():
    """XPCS frame rows: temporaries per row and program bytes from the model's profile
    (ROW_MEMORY), not the per-point default; points keep the default."""
    from shardmc import xpcs
    from shardmc.core.engine import memory_profile
    from shardmc.xpcs.models import ROW_MEMORY

    data, _ = xpcs.simulate("laminar_flow", n_angles=2, n_t=100, seed=0)
    model = xpcs.XPCSModel.create("laminar_flow", 2)
    rows, kwargs = xpcs.prepare(model, data)
    profile = memory_profile(model, rows, kwargs)
    entry_bytes, program_bytes = ROW_MEMORY["laminar_flow"]
    assert profile == R.MemoryProfile(entry_bytes * 128, program_bytes)  # 100 -> 128 columns
    assert memory_profile(model.with_points(), *xpcs.prepare(model.with_points(), data)) is None
    plain = Workload(num_shards=4, shard_points=50, n_params=9, num_chains=4, num_warmup=100,
                     num_samples=100, point_bytes=int(sum(a[:1].nbytes for a in rows.values())))
    wide = dataclasses.replace(plain, row_temp_bytes=profile.row_temp_bytes,
                               program_bytes=profile.program_bytes)
    extra = 50 * (profile.row_temp_bytes - R.POINT_TEMP_BYTES) + program_bytes
    assert R.workload_memory(wide) - R.workload_memory(plain) == extra
    assert (R.workload_memory(wide, processes=2) - R.workload_memory(plain, processes=2)
            == 2 * extra)


def test_auto_sizes_the_pool_to_the_memory(monkeypatch):
    """auto starts no more workers than fit in memory, and runs in one process when
    fewer than two fit (instead of a pool the memory check would refuse)."""
    import shardmc.backends as B

    monkeypatch.setattr(B, "physical_cores", lambda: 8)
    per_worker = R.workload_memory(BIG, processes=1)
    segments = BIG.num_shards * BIG.shard_points * (BIG.point_bytes + 1)

    def memory(workers: float) -> int:  # available memory that fits ``workers`` workers
        return int((workers * per_worker + segments) / R.MEMORY_SAFETY_FRACTION) + 1

    monkeypatch.setattr(R, "available_memory", lambda: memory(100))
    roomy = backend_choice(BIG, examples.linear_regression_known_noise)
    assert roomy.name == "processes" and roomy.workers is None
    monkeypatch.setattr(R, "available_memory", lambda: memory(2.5))
    tight = backend_choice(BIG, examples.linear_regression_known_noise)
    assert tight.name == "processes" and tight.workers == 2
    assert "as many as fit in memory" in tight.reason
    if R.usable_cores() >= 2:  # the pool itself checks its workers against the cores
        backend = select_backend("auto", choice=tight)
        assert backend.workers == 2
        assert backend.estimate_memory(BIG) <= R.MEMORY_SAFETY_FRACTION * memory(2.5)
        backend.close()
    monkeypatch.setattr(R, "available_memory", lambda: memory(1.5))
    alone = backend_choice(BIG, examples.linear_regression_known_noise)
    assert alone.name == "sequential" and alone.reason.startswith("memory:")


def test_memory_refusal_names_the_numbers(monkeypatch):
    with pytest.raises(ShardMCInputError, match=r"memory: .* needs about .* GiB"):
        R.check_memory(10 * R.GiB, "the run", available=R.GiB)
    monkeypatch.setattr(R, "available_memory", lambda: 64 * 1024**2)
    with pytest.raises(ShardMCInputError, match="memory: backend 'sequential'"):
        shardmc.fit(examples.linear_regression_known_noise,
                    examples.linear_regression_data(50, 2), 2)


def test_lpt_puts_costly_and_noisy_shards_first():
    class Spec:
        def __init__(self, points, sigma=None, cost=None):
            self.num_points, self.cost = points, cost
            self.mask = np.ones(points, bool)
            self.data = {} if sigma is None else {"sigma": np.full(points, sigma)}

    plain = [Spec(10), Spec(30), Spec(20)]
    assert lpt_order(shard_costs([cost_terms(s) for s in plain])) == [1, 2, 0]
    noisy = [Spec(10, sigma=1.0), Spec(10, sigma=3.0), Spec(10, sigma=2.0)]
    assert lpt_order(shard_costs([cost_terms(s) for s in noisy])) == [1, 2, 0]
    explicit = [Spec(10, cost=1.0), Spec(10, cost=5.0)]
    assert lpt_order(shard_costs([cost_terms(s) for s in explicit])) == [1, 0]


def test_worker_environment_is_a_copy_with_thread_settings():
    before = dict(os.environ)
    env = worker_environment(2, extra={"EXTRA": "1"})
    assert dict(os.environ) == before
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
    assert env["JAX_ENABLE_X64"] == "1" and env["JAX_PLATFORMS"] == "cpu"
    assert env["EXTRA"] == "1"
    sets = core_sets(2, 1, pin=True)
    assert len(sets) == 2
    if all(sets):
        assert not set(sets[0]) & set(sets[1])
    assert core_sets(2, 1, pin=False) == [[], []]


def test_compile_cache_folder_is_private(tmp_path):
    path = compile_cache_dir(tmp_path / "cache")
    assert path.is_dir()
    for p in (path, path.parent, path.parent.parent):
        assert stat.S_IMODE(p.stat().st_mode) == CACHE_MODE
    assert compile_cache_dir(tmp_path / "cache") == path  # stable key
    os.chmod(path, 0o777)
    with pytest.raises(PermissionError, match="writable by group or others"):
        compile_cache_dir(tmp_path / "cache")


def test_progress_counts_running_done_failed():
    with ShardProgress(3) as progress:
        progress.on_event(ShardEvent(STARTED, 0, worker=0))
        progress.on_event(ShardEvent(STARTED, 1, worker=1))
        assert len(progress.running) == 2
        progress.on_event(ShardEvent(RETRY, 1, worker=1, attempt=2, message="worker died"))
        assert len(progress.running) == 1 and progress.retries == 1
        progress.on_result(ShardResult(index=0, status="ok"))
        progress.on_result(ShardResult(index=1, status="failed", error="boom"))
        assert (progress.done, progress.failed, len(progress.running)) == (2, 1, 0)
