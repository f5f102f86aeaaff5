"""Parameter recovery on synthetic XPCS data: static and laminar_flow, 3 angles, seed 0,
the default model (frame rows, stratified by angle; power-law blocks sampled in rate
coordinates), sampler (dense mass matrix from the Laplace start, adapted) and combiner
(consensus); docs/xpcs.md.

Every physical parameter's central 90 % interval must contain the truth, and its
posterior mean must lie within 3 posterior sd of it. The second check is not tuned: a
calibrated posterior gives |z| > 3 with probability 0.003 per parameter. The first is
not guaranteed even for an exact posterior (with d parameters each at 90 % and
correlated, "all covered" happens with probability between 0.9^d and 0.9); the seed was
fixed to 0 before the first run and never changed.

Shard counts: static K = 8 (664 points, 22 rows per shard). laminar_flow K = 4 (1 327
points per shard): on rows at K = 8 one shard ended at 11.1 % divergences (limit 10 %)
after 3 attempts, the small-shard geometry docs/xpcs.md "Shard size" describes (until
2026-12 these tests ran on point lists at K = 8 for both). A larger laminar case, 3 × 120
frames at K = 4, missed gamma_dot_offset's interval (z +2.09), but so did one shard
holding all the data (NUTS on the full data set, z +1.86): that data set sits there.
"""

import numpy as np
import pytest

import shardmc
from shardmc import xpcs

#: Shards per physics (module docstring).
NUM_SHARDS = {"static": 8, "laminar_flow": 4}
NUM_ANGLES = 3
#: 60 frames (5 310 points): on rows, 54 s (static) and 49 s (laminar_flow) on 2 cores (on
#: point lists at K = 8: 172 s together).
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
    model = xpcs.XPCSModel.create(physics, data.n_phi)
    rows, kwargs = xpcs.prepare(model, data)
    start = xpcs.warm_start(model, data, seed=SEED, laplace=False)
    post = shardmc.fit(model, rows, NUM_SHARDS[physics], model_kwargs=kwargs, seed=SEED,
                       sharding="stratified", strata=rows["phi_idx"],
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
    """static (D0, alpha, D_offset). Observed z = (mean - truth) / sd: D0 -0.25,
    alpha -0.13, D_offset +0.04 (90 % needs |z| below ~1.645; on point lists at K = 8 they
    were -0.48, -0.26, +0.26)."""
    _check(*_recover("static"))


@pytest.mark.slow
def test_laminar_flow_recovery():
    """laminar_flow (7 parameters). Observed z: D0 -0.04, alpha -0.11, D_offset -0.01,
    gamma_dot_0 -0.47, beta +0.50, gamma_dot_offset +0.40, phi0 +1.48 (point lists at
    K = 8: -1.14, -1.07, +1.10, -0.46, +0.51, +0.40, +1.44; full-data NUTS gave phi0
    +1.62, so the interval check has little margin in phi0). One shard warns of R-hat >
    1.01 in J_rates[0] (not checked here)."""
    _check(*_recover("laminar_flow"))
