"""The processes backend with real spawned workers: determinism, bootstrap, cleanup."""

from __future__ import annotations

import os
from pathlib import Path

import fault_models
import numpy as np
import pytest

import shardmc
from shardmc import examples
from shardmc.backends import ProcessesBackend

#: 2 shards of 40 000 points: big enough that XLA splits reductions over threads, which
#: is where a worker's thread setup could change the last bits.
NUM_POINTS, NUM_SHARDS = 80_000, 2
SAMPLER = {"num_warmup": 100, "num_samples": 100, "num_chains": 2}


@pytest.fixture(scope="module")
def data():
    return examples.linear_regression_data(NUM_POINTS, 3, seed=11)


def _fit(data, backend, **kw):
    return shardmc.fit(examples.linear_regression_known_noise, data, NUM_SHARDS, seed=5,
                       backend=backend, **SAMPLER, **kw)


def _leftover_segments() -> list[str]:
    shm_dir = Path("/dev/shm")
    if not shm_dir.exists():
        return []
    return [p.name for p in shm_dir.glob(f"shardmc_{os.getpid()}_*")]


def test_processes_bit_identical_to_sequential(data):
    reference = _fit(data, "sequential")
    with ProcessesBackend(workers=1) as one:
        single = _fit(data, one)
    with ProcessesBackend(workers=2) as two:
        first = _fit(data, two)
        compiles_first = [w["compiles"] for w in two.last_run["workers"].values()]
        again = _fit(data, two)  # same pool, programs already compiled
        compiles_again = [w["compiles"] for w in two.last_run["workers"].values()]
    fresh = _fit(data, "processes", backend_options={"workers": 2})  # new pool, closed by fit
    for post in (single, first, again, fresh):
        assert np.array_equal(post.unconstrained, reference.unconstrained)
        assert np.array_equal(post.shard_draws, reference.shard_draws)
    assert first.provenance["backend"] == "processes"
    # One compile per program per worker in a run, none when the pool is reused.
    for counts in compiles_first:
        assert counts.get("jit(warmup_chain)", 0) <= 1
        assert counts.get("jit(sample_chain)", 0) <= 1
    assert all(not c for c in compiles_again)
    assert _leftover_segments() == []


def test_worker_bootstrap_sets_environment_in_the_child_only():
    before = dict(os.environ)
    with ProcessesBackend(workers=2, threads_per_worker=1) as backend:
        facts = list(backend.map(fault_models.worker_facts, [{"tag": 0}, {"tag": 1}]))
        pool = backend._pool
        assert pool is not None
        ready = [h.info for h in pool.handles.values()]
    assert dict(os.environ) == before  # the driver's environment is untouched
    for fact in facts:
        env = fact["env"]
        assert fact["x64"] and env["JAX_ENABLE_X64"] == "1"
        assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "1"
        assert env.get("XLA_FLAGS") == before.get("XLA_FLAGS")  # same XLA as the driver
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
        sets = [tuple(f["affinity"]) for f in facts]
        if len(set(f["pid"] for f in facts)) == 2:  # both workers took a task
            assert len(set(sets)) == 2 and not set(sets[0]) & set(sets[1])
        for fact in facts:  # every thread (XLA's pool included) is pinned
            assert all(a == fact["affinity"] for a in fact["threads_affinity"])
        assert all(info["pinned"] for info in ready)


def test_arrays_travel_through_the_pipe_when_shared_memory_is_short(monkeypatch):
    from shardmc.backends import shm
    from shardmc.core.sampling import SamplerConfig, SamplingPlan, ShardSpec, shard_key

    monkeypatch.setattr(shm, "shm_free_bytes", lambda: 0)
    small = examples.linear_regression_data(200, 2, seed=1)
    plan = SamplingPlan(100, 100, 1, 100, 2, False)
    specs = [ShardSpec(index=k, model=examples.linear_regression_known_noise,
                       data={n: a[k * 100:(k + 1) * 100] for n, a in small.items()},
                       mask=np.ones(100, bool), model_kwargs={}, prior_scale=0.5,
                       seed_key=shard_key(0, k), config=SamplerConfig(), plan=plan,
                       observed_sites=frozenset({"y"})) for k in range(2)]
    with ProcessesBackend(workers=1, env={fault_models.FAULT_INDEX_ENV: "-1"}) as backend:
        results = sorted(backend.map(fault_models.hang_or_checksum, specs),
                         key=lambda r: r.index)
    for spec, result in zip(specs, results, strict=True):
        expected = sum(float(v.sum()) for v in spec.data.values())
        assert result.draws[0, 0, 0] == pytest.approx(expected, rel=1e-12)
    assert _leftover_segments() == []


def test_xpcs_model_object_runs_on_workers_bit_identical():
    """The flagship model is a callable XPCSModel object, not a function: its class
    imports and it pickles, so workers get it (it used to be refused by name lookup)."""
    from shardmc import xpcs

    data, _ = xpcs.simulate("static", n_angles=2, n_t=24, seed=1)
    model = xpcs.XPCSModel.create("static", data.n_phi)
    points, kwargs = xpcs.prepare(model, data)
    start = xpcs.warm_start(model, data, seed=0, laplace=False)
    fit = lambda backend: shardmc.fit(  # noqa: E731
        model, points, 2, model_kwargs=kwargs, seed=3, backend=backend, num_warmup=60,
        num_samples=60, num_chains=1, init_strategy="value", init_values=start.init_values)
    reference = fit("sequential")
    with ProcessesBackend(workers=2) as two:
        assert np.array_equal(fit(two).shard_draws, reference.shard_draws)


def test_unpicklable_callable_object_is_refused_before_sampling(data):
    import functools

    model = functools.partial(lambda **kw: examples.linear_regression_known_noise(**kw))
    with pytest.raises(shardmc.ShardMCInputError, match="cannot be pickled"):
        shardmc.fit(model, data, NUM_SHARDS, backend="processes",
                    backend_options={"workers": 1}, **SAMPLER)
