"""Parameter recovery on synthetic XPCS data: static and laminar_flow, 3 angles, K = 8
shards, seed 0, the default model on point lists (power-law blocks sampled in rate
coordinates), sampler (dense mass matrix from the Laplace start, adapted) and combiner
(consensus); docs/xpcs.md.

Every physical parameter's central 90 % interval must contain the truth, and its
posterior mean must lie within 3 posterior sd of it. The second check is not tuned: a
calibrated posterior gives |z| > 3 with probability 0.003 per parameter. The first is
not guaranteed even for an exact posterior (with d parameters each at 90 % and
correlated, "all covered" happens with probability between 0.9^d and 0.9); the seed was
fixed to 0 before the first run and never changed.
"""

import numpy as np
import pytest

import shardmc
from shardmc import xpcs

NUM_SHARDS = 8
NUM_ANGLES = 3
#: 60 frames (5 310 points, 664 per shard): both tests took 172 s together on 2 cores
#: (60 s and 130 s when another test run shared them).
NUM_FRAMES = 60
SEED = 0
#: Shards run in this process: the accuracy under test does not depend on where they run,
#: and a pool would compile every program once more per worker (fit's default, "auto",
#: picks one for these sizes).
SAMPLER = {"num_chains": 2, "num_warmup": 300, "num_samples": 1000, "adaptive_sampling": False,
           "backend": "sequential"}
INTERVAL = 0.9
MAX_ABS_Z = 3.0


def _recover(physics: str) -> tuple[dict[str, np.ndarray], dict, tuple[str, ...]]:
    shardmc.enable_x64()
    data, truth = xpcs.simulate(physics, n_angles=NUM_ANGLES, n_t=NUM_FRAMES, seed=SEED)
    # point lists, as when the numbers below were recorded: on frame rows stratified by
    # angle (the default) one static shard of this seed ended at 10.2 % divergences (limit
    # 10 %) after 3 attempts; rows are checked against full-data NUTS in
    # test_xpcs_rows_accuracy.py
    model = xpcs.XPCSModel.create(physics, data.n_phi, likelihood="points")
    points, kwargs = xpcs.prepare(model, data)
    start = xpcs.warm_start(model, data, seed=SEED, laplace=False)
    post = shardmc.fit(model, points, NUM_SHARDS, model_kwargs=kwargs, seed=SEED,
                       sharding="stratified", strata=points["phi_idx"],
                       init_strategy="value", init_values=start.init_values, **SAMPLER)
    return post.samples, truth, model.parameter_names


def _check(samples: dict[str, np.ndarray], truth: dict, names: tuple[str, ...]) -> None:
    lo, hi = (1 - INTERVAL) / 2, 1 - (1 - INTERVAL) / 2
    report = []
    for name in names:
        x = samples[name]
        a, b = np.quantile(x, [lo, hi])
        z = (x.mean() - truth[name]) / x.std()
        report.append(f"{name}: z {z:+.2f}, 90% [{a:.4g}, {b:.4g}], truth {truth[name]:.4g}")
        assert abs(z) < MAX_ABS_Z, "\n".join(report)
        assert a <= truth[name] <= b, "\n".join(report)


@pytest.mark.slow
def test_static_recovery():
    """static (D0, alpha, D_offset). Observed z = (mean - truth) / sd: D0 -0.48,
    alpha -0.26, D_offset +0.26 (90 % needs |z| below ~1.645)."""
    _check(*_recover("static"))


@pytest.mark.slow
def test_laminar_flow_recovery():
    """laminar_flow (7 parameters). Observed z: D0 -1.14, alpha -1.07, D_offset +1.10,
    gamma_dot_0 -0.46, beta +0.51, gamma_dot_offset +0.40, phi0 +1.44. This data set sits
    ~1-1.5 sd from the truth in D0, D_offset and phi0 whatever the method (a full-data
    NUTS run gave -1.18, -1.10, +1.13 and +1.62 there), so the interval check has little
    margin in phi0."""
    _check(*_recover("laminar_flow"))
