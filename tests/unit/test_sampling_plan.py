import pytest

from shardmc.core.sampling import SamplerConfig, SamplingPlan


@pytest.mark.parametrize(("points", "warmup", "samples"),
                         [(50, 140, 350), (5_000, 250, 750), (50_000, 500, 1500),
                          (500_000, 500, 1500)])
def test_seed_table(points, warmup, samples):
    plan = SamplingPlan.from_config(SamplerConfig(), points, 7)
    assert (plan.n_warmup, plan.n_samples) == (warmup, samples)
    assert plan.was_adapted == (points < 10_000)


def test_never_above_configured_counts():
    cfg = SamplerConfig(num_warmup=80, num_samples=120)
    plan = SamplingPlan.from_config(cfg, 50, 20)
    assert (plan.n_warmup, plan.n_samples) == (80, 120)


def test_minimums_configurable_and_adaptation_off():
    cfg = SamplerConfig(min_warmup=300, min_samples=600)
    plan = SamplingPlan.from_config(cfg, 50, 1)
    assert (plan.n_warmup, plan.n_samples) == (300, 600)
    off = SamplingPlan.from_config(SamplerConfig(adaptive_sampling=False), 50, 1)
    assert (off.n_warmup, off.n_samples, off.was_adapted) == (500, 1500, False)
    assert off.total_samples == 1500 * 4
