"""Bad input is refused with a clear ShardMCInputError (a ValueError) before any sampling."""

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import shardmc
from shardmc.backends import BackendCapabilities
from shardmc.examples import linear_regression_data
from shardmc.examples import linear_regression_known_noise as model


class NoSamplingBackend:
    """A backend that fails the test if any shard is ever sampled."""

    capabilities = BackendCapabilities(name="no-sampling")

    def map(self, fn, specs):
        raise AssertionError("sampling started despite bad input")

    def close(self):
        pass


DATA = linear_regression_data(40, 2, seed=0)


def fit(data=DATA, k=2, **kw):
    kw.setdefault("backend", NoSamplingBackend())
    return shardmc.fit(kw.pop("model", model), data, k, **kw)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"data": {"x": DATA["x"], "y": DATA["y"][:-1]}}, r"same length.*x=40, y=39"),
    ({"data": {"x": DATA["x"], "y": np.where(np.arange(40) == 3, np.nan, DATA["y"])}},
     r"data\['y'\].*1 NaN or inf"),
    ({"data": {"x": DATA["x"], "y": np.where(np.arange(40) == 3, np.inf, DATA["y"])}},
     r"data\['y'\].*NaN or inf"),
    ({"k": 41}, r"num_shards: expected at most the number of points \(40\), found 41"),
    ({"k": 0}, r"num_shards: expected an integer >= 1, found 0"),
    ({"k": 2.5}, r"num_shards"),
    ({"method": "median"}, r"combine: expected one of .*found 'median'"),
    ({"space": "latent"}, r"space: expected one of"),
    ({"sharding": "stratified"}, r"strata"),
    ({"num_chains": 0}, r"sampler.num_chains"),
    ({"target_accept_prob": 1.5}, r"sampler.target_accept_prob"),
    ({"init_strategy": "value"}, r"init_values"),
    ({"init_values": {"gamma": 1.0}}, r"init_values: unknown latent site"),
    ({"num_warmpu": 10}, r"unknown option.*num_warmpu"),
    ({"data": {}}, r"data: expected a non-empty dict"),
    ({"data": {"x": DATA["x"], "y": DATA["y"].astype(str)}}, r"data\['y'\]: expected a numeric"),
    ({"backend": "gpu-cluster"}, r"backend: expected one of"),
])
def test_bad_input_refused(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        fit(**kwargs)
    assert isinstance(info.value, shardmc.ShardMCInputError)


def no_latent(x, y):
    numpyro.sample("y", dist.Normal(x.sum(-1), 1.0), obs=y)


def local_latent(x, y):
    z = numpyro.sample("z", dist.Normal(0, 1).expand([x.shape[0]]).to_event(1))
    numpyro.sample("y", dist.Normal(z, 1.0), obs=y)


def scalar_likelihood(x, y):
    b = numpyro.sample("b", dist.Normal(0, 1))
    numpyro.factor("loglik", dist.Normal(b, 1.0).log_prob(y).sum())


def broken(x, y):
    raise KeyError("no such column")


@pytest.mark.parametrize(("bad_model", "match"), [
    (no_latent, "at least one latent sample site"),
    (local_latent, "latent site 'z' has a shape that grows with the data"),
    (broken, "calling the model on shard data failed: KeyError"),
])
def test_bad_models_refused(bad_model, match):
    with pytest.raises(shardmc.ShardMCInputError, match=match):
        fit(model=bad_model)


def test_unmaskable_likelihood_refused_only_when_padding_is_needed():
    with pytest.raises(shardmc.ShardMCInputError, match="cannot mask padded points"):
        fit(model=scalar_likelihood, k=3)   # 40 points in 3 shards needs padding
    with pytest.raises(AssertionError, match="sampling started"):
        fit(model=scalar_likelihood, k=4)   # equal shards: accepted, reaches sampling
