"""Row-shard CMC against full-data NUTS (docs/xpcs.md, "Frame rows").

One simulated data set per physics (3 angles x 100 frames, 14 850 points). The reference
is full-data NUTS (K = 1, 4 chains x 1000 draws); the candidate is what ``shardmc run``
does by default: K = 8 row shards stratified by angle (2 chains x 1000 draws each, on
2 worker processes),
consensus, then the importance correction on the full data (``importance_refine``; plain
consensus keeps the bias of "Known limitation: skewed small shards", 0.1-1.8 sd here
depending on the partition, benchmarks/results/xpcs-row-sharding.json). Both use the
default row likelihood, whose value and gradient equal the point-list kernel to 1e-10
(tests/unit/test_xpcs_rows.py).

Monte Carlo error budget: the corrected draws have an importance ESS >= 1 500 (asserted;
64 000 proposal draws, of which 2-5 % count: ESS 1 309-1 477 from 32 000), so the
standard error of a mean is <= sd / sqrt(1500) = 0.026 sd;
the reference's (NUTS ESS ~ 4 000) 0.016 sd. 0.1 sd on |mean error| is >= 3.3 standard
errors of the difference; the sd ratio's standard error is <= 1 / sqrt(2 * 1500) = 1.8 %,
so [0.9, 1.1] is >= 5.5 of them.
"""

import pytest

import shardmc
from shardmc import xpcs

NUM_SHARDS = 8
NUM_ANGLES = 3
NUM_FRAMES = 100
SEED = 4
SAMPLER = {"num_chains": 2, "num_warmup": 300, "num_samples": 1000, "adaptive_sampling": False}
REFERENCE = {"num_chains": 4, "num_warmup": 500, "num_samples": 1000, "adaptive_sampling": False}
MAX_MEAN_ERROR_SD = 0.1
SD_RATIO = (0.9, 1.1)
REFINE_DRAWS = 64000
MIN_IMPORTANCE_ESS = 1500


def _fits(physics: str) -> tuple[dict, dict, tuple[str, ...]]:
    shardmc.enable_x64()
    data, _ = xpcs.simulate(physics, n_angles=NUM_ANGLES, n_t=NUM_FRAMES, seed=SEED)
    model = xpcs.XPCSModel.create(physics, data.n_phi)  # likelihood="rows", the default
    start = xpcs.warm_start(model, data, seed=SEED, laplace=False)
    rows, kwargs = xpcs.prepare(model, data)
    options = {"model_kwargs": kwargs, "init_strategy": "value",
               "init_values": start.init_values}
    reference = shardmc.fit(model, rows, 1, seed=1, **REFERENCE, **options)
    cmc = shardmc.fit(model, rows, NUM_SHARDS, seed=SEED, sharding="stratified",
                      strata=rows["phi_idx"], backend="processes",
                      backend_options={"workers": 2}, **SAMPLER, **options)
    refined = shardmc.importance_refine(cmc, model, rows, model_kwargs=kwargs, seed=SEED,
                                        num_draws=REFINE_DRAWS)
    refine = refined.provenance["refine"]
    assert refine["applied"] and refine["importance_ess"] >= MIN_IMPORTANCE_ESS, refine
    return refined.samples, reference.samples, model.parameter_names


def _check(physics: str) -> None:
    cmc, ref, names = _fits(physics)
    report, failed = [], False
    for name in names:
        sd = ref[name].std(ddof=1)
        error = (cmc[name].mean() - ref[name].mean()) / sd
        ratio = cmc[name].std(ddof=1) / sd
        report.append(f"{name}: mean error {error:+.3f} sd, sd ratio {ratio:.3f}")
        failed |= abs(error) > MAX_MEAN_ERROR_SD or not SD_RATIO[0] <= ratio <= SD_RATIO[1]
    print("\n".join(report))
    assert not failed, "\n".join(report)


@pytest.mark.slow
def test_static_row_shards_match_full_data_nuts():
    _check("static")


@pytest.mark.slow
def test_laminar_flow_row_shards_match_full_data_nuts():
    _check("laminar_flow")
