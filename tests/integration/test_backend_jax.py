"""The jax backend: all shards in one vmapped program, spread over devices."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import shardmc
from shardmc import examples
from shardmc.backends.jax_devices import JaxBackend
from shardmc.core.sampling import ShardResult, run_shard
from shardmc.errors import ShardMCInputError

NUM_SHARDS = 8
SAMPLER = {"num_warmup": 100, "num_samples": 100, "num_chains": 2}
#: Combined means must agree within this many Monte Carlo standard errors.
MEAN_TOLERANCE_SE = 4.0
#: Draws per effective draw assumed for the standard error (conservative for NUTS).
DRAWS_PER_EFFECTIVE = 5


@pytest.fixture(scope="module")
def data():
    return examples.linear_regression_data(4000, 3, seed=21)


def _fit(data, backend):
    return shardmc.fit(examples.linear_regression_known_noise, data, NUM_SHARDS, seed=9,
                       backend=backend, **SAMPLER)


def test_jax_backend_reproducible_and_equivalent_to_sequential(data):
    reference = _fit(data, "sequential")
    first = _fit(data, "jax")
    again = _fit(data, JaxBackend(devices=1))
    assert first.provenance["backend"] == "jax"
    assert np.array_equal(first.unconstrained, again.unconstrained)
    assert first.shard_draws.shape == reference.shard_draws.shape
    for name in reference.shard_stats:
        assert first.shard_stats[name].shape == reference.shard_stats[name].shape
    a, b = first.unconstrained, reference.unconstrained
    se = b.std(0) * np.sqrt(2 * DRAWS_PER_EFFECTIVE / b.shape[0])
    assert np.all(np.abs(a.mean(0) - b.mean(0)) < MEAN_TOLERANCE_SE * se)
    assert np.allclose(a.std(0) / b.std(0), 1.0, atol=0.25)
    assert all(s["attempts"] == 1 for s in first.provenance["shard_stats"])


def test_jax_backend_refuses_more_devices_than_exist():
    import jax

    with pytest.raises(ShardMCInputError, match=r"backend\.devices"):
        JaxBackend(devices=jax.device_count() + 1)


def test_first_attempt_from_elsewhere_continues_the_retry_ladder(data):
    """A shard whose batched attempt failed goes on with attempt 2 (what the jax backend
    does for shards that need a retry)."""
    from shardmc.core.engine import _specs, probe_model
    from shardmc.core.sampling import SamplerConfig, SamplingPlan
    from shardmc.core.sharding import assign_points

    layout = assign_points(4000, NUM_SHARDS, seed=9)
    probe = probe_model(examples.linear_regression_known_noise, data, {}, layout)
    config = SamplerConfig(**SAMPLER, max_attempts=2)
    plan = SamplingPlan.from_config(config, layout.shard_length, probe.layout.dim)
    spec = next(_specs(examples.linear_regression_known_noise, data, layout, {}, config, plan,
                       probe, 9, {}))
    failed_first = ShardResult(index=spec.index, status="failed", error="non-finite")
    result = run_shard(spec, first=failed_first)
    assert result.ok and result.stats.attempts == 2


def test_jax_backend_spreads_shards_over_several_devices(tmp_path):
    """Two host devices (set before JAX starts, in a fresh interpreter): shard_map splits
    the shards, and the answer matches the sequential one statistically."""
    script = textwrap.dedent("""
        import json, sys
        import numpy as np, shardmc, jax
        from shardmc import examples
        data = examples.linear_regression_data(2000, 2, seed=4)
        kw = dict(seed=1, num_warmup=100, num_samples=100, num_chains=2)
        jx = shardmc.fit(examples.linear_regression_known_noise, data, 5, backend="jax", **kw)
        sq = shardmc.fit(examples.linear_regression_known_noise, data, 5, **kw)
        from shardmc.backends.jax_devices import JaxBackend
        json.dump({"devices": jax.device_count(),
                   "parallel": JaxBackend().capabilities.parallel_shards,
                   "multi": jx.provenance["backend"],
                   "jax_mean": jx.unconstrained.mean(0).tolist(),
                   "seq_mean": sq.unconstrained.mean(0).tolist(),
                   "seq_sd": sq.unconstrained.std(0).tolist(),
                   "n": int(sq.unconstrained.shape[0])}, sys.stdout)
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    import json

    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["devices"] == res["parallel"] == 2 and res["multi"] == "jax"
    se = np.array(res["seq_sd"]) * np.sqrt(2 * DRAWS_PER_EFFECTIVE / res["n"])
    diff = np.abs(np.array(res["jax_mean"]) - np.array(res["seq_mean"]))
    assert np.all(diff < MEAN_TOLERANCE_SE * se)


def test_xpcs_frame_rows_on_the_jax_backend_match_sequential():
    """XPCS frame rows (whose kernels branch on the parameters, shardmc.xpcs.batch_cond)
    through the vmapped program: the combined posterior agrees with sequential's."""
    from shardmc import xpcs

    shardmc.enable_x64()
    sim, _ = xpcs.simulate("static", n_angles=2, n_t=30, seed=4)
    model = xpcs.XPCSModel.create("static", sim.n_phi)
    rows, kwargs = xpcs.prepare(model, sim)
    start = xpcs.warm_start(model, sim, seed=0, laplace=False)
    options = {"model_kwargs": kwargs, "seed": 3, "sharding": "stratified",
               "strata": rows["phi_idx"], "init_strategy": "value",
               "init_values": start.init_values, **SAMPLER}
    batched = shardmc.fit(model, rows, 2, backend="jax", **options)
    reference = shardmc.fit(model, rows, 2, backend="sequential", **options)
    assert batched.provenance["backend"] == "jax"
    assert all(s["attempts"] == 1 for s in batched.provenance["shard_stats"])
    a, b = batched.unconstrained, reference.unconstrained
    se = b.std(0) * np.sqrt(2 * DRAWS_PER_EFFECTIVE / b.shape[0])
    assert np.all(np.abs(a.mean(0) - b.mean(0)) < MEAN_TOLERANCE_SE * se)
    assert np.allclose(a.std(0) / b.std(0), 1.0, atol=0.25)
