"""End-to-end engine behaviour on a small problem: determinism, posterior I/O, diagnostics."""

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import shardmc
from shardmc.core.diagnostics import shard_diagnostics
from shardmc.examples import linear_regression_data, linear_regression_known_noise

SMALL = {"num_chains": 2, "num_warmup": 150, "num_samples": 200, "adaptive_sampling": False}


def model_with_deterministics(x, y):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.deterministic("beta_sum", beta.sum())          # parameter-only: recomputed
    numpyro.deterministic("fitted", x @ beta)              # per point: skipped, recorded
    numpyro.sample("y", dist.Normal(x @ beta, sigma), obs=y)


@pytest.fixture(scope="module")
def data():
    return linear_regression_data(1_003, 2, seed=5)


@pytest.fixture(scope="module")
def posterior(data):
    return shardmc.fit(model_with_deterministics, data, 4, seed=7, **SMALL)


def test_same_seed_gives_bit_identical_draws(data, posterior):
    again = shardmc.fit(model_with_deterministics, data, 4, seed=7, **SMALL)
    assert np.array_equal(again.unconstrained, posterior.unconstrained)
    for name in posterior.samples:
        assert np.array_equal(again.samples[name], posterior.samples[name])
    other = shardmc.fit(model_with_deterministics, data, 4, seed=8, **SMALL)
    assert not np.array_equal(other.unconstrained, posterior.unconstrained)


def test_samples_include_recomputed_deterministics(posterior):
    s = posterior.samples
    assert set(s) == {"beta", "sigma", "beta_sum"}
    np.testing.assert_allclose(s["beta_sum"], s["beta"].sum(1), rtol=1e-12)
    assert posterior.provenance["deterministic_skipped"] == ["fitted"]
    assert s["beta"].shape == (2 * 200, 2) and np.all(s["sigma"] > 0)


def test_summary_and_shard_diagnostics(posterior):
    table = posterior.summary()
    assert list(table.index) == ["beta[0]", "beta[1]", "sigma", "beta_sum"]
    assert {"mean", "sd", "median"} <= set(table.columns)
    d = posterior.diagnostics
    assert d["rhat"].shape == (4, 3) and d["ess_bulk"].shape == (4, 3)
    assert d["bfmi"].shape == (4, 2) and d["divergences"].shape == (4,)
    assert np.all(d["rhat"] < 1.1)
    assert posterior.provenance["shard_sizes"] == [251, 251, 251, 250]
    assert len(posterior.provenance["shard_stats"]) == 4


def test_streamed_shard_diagnostics_equal_the_stacked_call(posterior):
    """fit diagnoses each shard as it arrives; the values are those of one stacked call."""
    st = posterior.shard_stats
    stacked = shard_diagnostics(posterior.shard_draws, st["energy"], st["diverging"],
                                st["tree_depth"], posterior.provenance["sampler"]["max_tree_depth"])
    assert set(stacked) == set(posterior.diagnostics)
    for name, value in stacked.items():
        np.testing.assert_array_equal(posterior.diagnostics[name], value)


def test_to_arviz_and_netcdf_round_trip(tmp_path, posterior):
    idata = posterior.to_arviz()
    assert idata.posterior["beta"].shape == (1, 400, 2)
    assert idata["shard_sample_stats"]["diverging"].shape == (4, 2, 200)
    path = posterior.save(tmp_path / "run.nc")
    back = shardmc.load(path)
    assert back.provenance == posterior.provenance
    assert back.coords == posterior.coords
    assert np.array_equal(back.unconstrained, posterior.unconstrained)
    assert np.array_equal(back.shard_draws, posterior.shard_draws)
    assert back.shard_laplace.shape == (4, 3, 3)
    assert np.array_equal(back.shard_laplace, posterior.shard_laplace)
    for name, v in posterior.samples.items():
        assert np.array_equal(back.samples[name], v)
    for name, v in posterior.diagnostics.items():
        np.testing.assert_array_equal(back.diagnostics[name], v)
    assert back.summary().equals(posterior.summary())


def test_load_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no posterior file"):
        shardmc.load(tmp_path / "nope.nc")


def test_vectorized_chains_match_sequential_statistically(data, posterior):
    vec = shardmc.fit(model_with_deterministics, data, 4, seed=7, chain_method="vectorized",
                      **SMALL)
    diff = vec.samples["beta"].mean(0) - posterior.samples["beta"].mean(0)
    assert np.all(np.abs(diff) < 5 * posterior.samples["beta"].std(0) / np.sqrt(400))


def two_scale_model(y, z):
    """Known posterior: mu_y has sd 1e-5/√n, mu_z sd 10/√n (n = 100 points)."""
    mu_y = numpyro.sample("mu_y", dist.Normal(0.0, 10.0))
    mu_z = numpyro.sample("mu_z", dist.Normal(0.0, 10.0))
    numpyro.sample("y", dist.Normal(mu_y, 1e-5), obs=y)
    numpyro.sample("z", dist.Normal(mu_z, 10.0), obs=z)


def test_mass_matrix_adapts_in_whitened_coordinates():
    """Posterior sds 1e-6 and 1: the first lies below NumPyro's 1e-3 regularisation of
    the adapted mass matrix, which would leave the two scales unbalanced (one step size for
    both: long trees). Adapting in the coordinates of the Laplace start
    (nuts.warmup_chain) keeps the balance: short trees, the right widths."""
    rng = np.random.default_rng(0)
    data = {"y": 3.0 + 1e-5 * rng.standard_normal(100), "z": 10.0 * rng.standard_normal(100)}
    post = shardmc.fit(two_scale_model, data, 1, seed=0, num_chains=1, num_warmup=200,
                       num_samples=1000, adaptive_sampling=False)
    # ~5 Monte Carlo standard errors of an sd at ESS ~300
    assert post.samples["mu_y"].std() == pytest.approx(1e-6, rel=0.2)
    assert post.samples["mu_z"].std() == pytest.approx(1.0, rel=0.2)
    assert post.shard_stats["n_steps"].mean() < 8


def test_laplace_precision_is_the_exact_shard_precision_of_a_conjugate_model():
    """Gaussian model: each shard's Laplace precision is X_k'X_k / noise^2 + I / (K prior
    var) exactly (the Hessian does not depend on where it is taken), the consensus
    weights shrink toward it, and the combined mean's Monte Carlo error is recorded."""
    from shardmc.core.sharding import assign_points
    from shardmc.examples import CONJUGATE_NOISE_SD, CONJUGATE_PRIOR_SD
    data = linear_regression_data(2_000, 3, seed=1)
    post = shardmc.fit(linear_regression_known_noise, data, 4, seed=2, **SMALL)
    layout = assign_points(2_000, 4, "random", seed=2)
    for k in range(4):
        x = data["x"][layout.indices[k][layout.mask[k]]]
        exact = x.T @ x / CONJUGATE_NOISE_SD**2 + np.eye(3) / (4 * CONJUGATE_PRIOR_SD**2)
        np.testing.assert_allclose(post.shard_laplace[k], exact, rtol=1e-10)
    assert post.provenance["combine_info"]["laplace_target"] is True
    rec = post.provenance["combine_mc_error"]
    assert rec["coords"] == post.coords and rec["draws_per_shard"] == 400
    # with exact weights only the shards' mean error is left: ~1/sqrt(400) = 0.05 sd
    assert max(rec["sd_units"]) < 0.15
