"""DESIGN invariant 1: the tempered shard targets multiply back to the full posterior."""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import potential_energy

from shardmc.core.sharding import assign_points, shard_arrays
from shardmc.core.tempering import observed_site_names, tempered_model


def model(x, y):
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.0).expand([3]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    rho = numpyro.sample("rho", dist.Beta(2.0, 3.0))
    with numpyro.plate("points", x.shape[0]):
        numpyro.sample("y", dist.StudentT(3.0 + rho, x @ beta, sigma), obs=y)


@pytest.mark.parametrize(("n", "k", "strategy"), [(400, 1, "random"), (400, 8, "random"),
                                                  (403, 7, "random"), (397, 5, "contiguous")])
def test_sum_of_shard_potentials_equals_full_potential(n, k, strategy):
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(n, 3)), "y": rng.normal(size=n)}
    lay = assign_points(n, k, strategy, seed=1)
    observed = observed_site_names(model, data)
    for draw in range(5):
        keys = jax.random.split(jax.random.PRNGKey(draw), 3)
        z = {"beta": jax.random.normal(keys[0], (3,)) * 2,
             "sigma": jax.random.normal(keys[1]),      # unconstrained (log) space
             "rho": jax.random.normal(keys[2])}        # unconstrained (logit) space
        full = potential_energy(model, (), data, z)
        total = 0.0
        for s in range(k):
            shard_model = tempered_model(model, 1.0 / k, observed, lay.mask[s])
            total += potential_energy(shard_model, (), shard_arrays(data, lay, s), z)
        np.testing.assert_allclose(total, full, rtol=0, atol=1e-10 * max(1.0, abs(full)))


def test_k1_unmasked_is_the_model():
    rng = np.random.default_rng(1)
    data = {"x": rng.normal(size=(50, 3)), "y": rng.normal(size=50)}
    z = {"beta": np.ones(3) * 0.3, "sigma": 0.2, "rho": -0.4}
    observed = observed_site_names(model, data)
    a = potential_energy(model, (), data, z)
    b = potential_energy(tempered_model(model, 1.0, observed, None), (), data, z)
    assert float(a) == float(b)
