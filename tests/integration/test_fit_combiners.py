"""Every combiner through ``shardmc.fit``: JSON-able metadata, ``auto`` resolved and
recorded, NetCDF round trip, and ``diagnose()`` on a real run."""

import json

import numpy as np
import pytest

import shardmc
from shardmc.combine import COMBINERS
from shardmc.examples import linear_regression_data, linear_regression_known_noise

SMALL = {"num_chains": 1, "num_warmup": 100, "num_samples": 200, "adaptive_sampling": False}


@pytest.fixture(scope="module")
def data():
    return linear_regression_data(400, 2, seed=3)


@pytest.mark.parametrize("method", sorted(COMBINERS))
def test_fit_with_every_combiner(data, method):
    post = shardmc.fit(linear_regression_known_noise, data, 4, seed=1, method=method, **SMALL)
    beta = post.samples["beta"]
    assert beta.ndim == 2 and beta.shape[1] == 2 and np.isfinite(beta).all()
    json.dumps(post.provenance)  # the provenance group of the NetCDF file
    if method == "auto":
        assert post.provenance["combine_info"]["chosen"] == "consensus"


def test_posterior_with_robust_weights_round_trips(data, tmp_path):
    post = shardmc.fit(linear_regression_known_noise, data, 4, seed=1,
                       method="robust_consensus", **SMALL)
    loaded = shardmc.load(post.save(tmp_path / "p.nc"))
    assert loaded.provenance["combine_info"]["weights"] == post.provenance["combine_info"][
        "weights"]
    assert loaded.provenance["shards_used"] == [0, 1, 2, 3]
    report = loaded.diagnose()
    assert report.shards.shape[0] == 4 and list(report.parameters.index) == ["beta[0]",
                                                                            "beta[1]"]
    assert isinstance(str(report), str) and json.dumps(report.to_dict())


def test_unknown_combine_option_fails_before_sampling(data):
    with pytest.raises(shardmc.ShardMCInputError, match="combine_options: method 'consensus'"):
        shardmc.fit(linear_regression_known_noise, data, 4, combine_options={"bandwith": 1})
