"""Importance correction of CMC posteriors against exact answers.

Tolerances are Monte Carlo errors of a self-normalised importance estimate with
importance ESS n_eff: the mean has sd ~ sd / sqrt(n_eff), a sample sd relative sd
~ 1 / sqrt(2 n_eff); Z of them (resampling adds a little more, covered by Z = 5).
"""

import numpy as np
import numpyro
import pytest
from numpyro.infer.util import potential_energy

import shardmc
from shardmc import examples as ex
from shardmc.core import refine
from shardmc.errors import ShardMCInputError

Z = 5.0
#: Shards run in this process: the accuracy under test does not depend on where they run,
#: and a pool would compile every program once more per worker (fit's default, "auto",
#: picks one for these sizes).
SAMPLER = {"num_chains": 2, "num_warmup": 300, "num_samples": 1000, "adaptive_sampling": False,
           "backend": "sequential"}


def _grid_moments(y: np.ndarray) -> tuple[float, float]:
    grid = np.linspace(1e-3, 4.0, 40_001)
    p = ex.normal_scale_posterior_grid(y, grid)
    p = p / p.sum()
    mean = float((grid * p).sum())
    return mean, float(np.sqrt(((grid - mean) ** 2 * p).sum()))


@pytest.mark.parametrize("rep", [0, 1])
def test_refine_removes_the_skew_bias_of_small_shards(rep):
    """sigma of N(0, sigma^2), 5 points in each of 10 shards: consensus is off by ~0.35
    posterior sd (measured); the importance-corrected draws match the exact posterior."""
    y = np.random.default_rng(100 + rep).normal(0.0, 1.0, 50)
    mean, sd = _grid_moments(y)
    post = shardmc.fit(ex.normal_scale, {"y": y}, 10, seed=0, **SAMPLER)
    out = refine.importance_refine(post, ex.normal_scale, {"y": y}, seed=1)
    info = out.provenance["refine"]
    assert info["reliable"] and info["pareto_k"] < refine.PSIS_K_MAX
    n_eff = info["importance_ess"]
    assert n_eff > 500
    s = out.samples["sigma"]
    assert abs(s.mean() - mean) / sd < Z / np.sqrt(n_eff)
    assert abs(s.std() / sd - 1) < Z / np.sqrt(2 * n_eff)
    assert out.unconstrained.shape == post.unconstrained.shape
    assert np.array_equal(out.shard_draws, post.shard_draws)
    assert "refine" in {i.kind for i in out.diagnose().issues}


def test_refine_keeps_an_exact_gaussian_posterior():
    data = ex.linear_regression_data(3_000, 3, seed=4)
    mean, cov = ex.conjugate_posterior(data["x"], data["y"])
    post = shardmc.fit(ex.linear_regression_known_noise, data, 6, seed=0, **SAMPLER)
    out = refine.importance_refine(post, ex.linear_regression_known_noise, data, seed=2)
    n_eff = out.provenance["refine"]["importance_ess"]
    assert out.provenance["refine"]["pareto_k"] < refine.PSIS_K_MAX
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(out.samples["beta"].mean(0) - mean) / sd < Z / np.sqrt(n_eff))


def test_full_potential_is_the_model_potential_in_chunks(monkeypatch):
    """Chunked (prior tempered to 1/C per chunk, padded last chunk) = NumPyro's potential
    of the whole model on all the data, to 1e-10."""
    monkeypatch.setattr(refine, "CHUNK_POINTS", 300)
    data = ex.linear_regression_data(1_001, 2, seed=3)
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(5, 2))
    got = refine.full_potential(ex.linear_regression_known_noise, data, {}, draws)
    want = [float(potential_energy(ex.linear_regression_known_noise, (), data,
                                   {"beta": d})) for d in draws]
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_refine_refuses_another_model():
    y = np.random.default_rng(0).normal(size=40)
    post = shardmc.fit(ex.normal_scale, {"y": y}, 2, seed=0, **{**SAMPLER, "num_samples": 200})

    def other(y):
        numpyro.sample("tau", numpyro.distributions.HalfNormal(1.0))
        numpyro.sample("y", numpyro.distributions.Normal(0.0, 1.0), obs=y)

    with pytest.raises(ShardMCInputError, match="coordinates"):
        refine.importance_refine(post, other, {"y": y})


def test_run_keeps_the_cmc_posterior_when_k_hat_is_too_high(monkeypatch):
    """shardmc run (combine.importance_refine) applies the correction only when k-hat is
    below PSIS_K_MAX; otherwise the CMC draws stay and the attempt is recorded."""
    from types import SimpleNamespace

    from shardmc.workflow import runs
    y = np.random.default_rng(0).normal(size=40)
    post = shardmc.fit(ex.normal_scale, {"y": y}, 2, seed=0, **{**SAMPLER, "num_samples": 200})
    inputs = SimpleNamespace(model=ex.normal_scale, points={"y": y}, model_kwargs={}, seed=0)
    lines: list[str] = []
    good = runs._refined(post, inputs, 40, lines.append)
    assert good.provenance["refine"]["applied"] and "k-hat" in lines[-1]

    original = refine.importance_refine

    def unreliable(p, *args, **kwargs):
        out = original(p, *args, **kwargs)
        out.provenance["refine"].update(pareto_k=0.9, reliable=False)
        return out

    monkeypatch.setattr(refine, "importance_refine", unreliable)
    kept = runs._refined(post, inputs, 40, lines.append)
    assert np.array_equal(kept.unconstrained, post.unconstrained)
    assert kept.provenance["refine"]["applied"] is False and "kept" in lines[-1]
    (issue,) = [i for i in kept.diagnose().issues if i.kind == "refine"]
    assert issue.severity == "warning" and "not applied" in issue.message
