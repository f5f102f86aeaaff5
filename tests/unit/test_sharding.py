import numpy as np
import pytest

from shardmc.core.sharding import assign_points, shard_arrays
from shardmc.errors import ShardMCInputError


@pytest.mark.parametrize("strategy", ["random", "contiguous"])
def test_every_point_exactly_once_and_one_shape(strategy):
    lay = assign_points(103, 10, strategy, seed=3)
    assert lay.indices.shape == (10, 11) and lay.mask.shape == (10, 11)
    real = np.sort(lay.indices[lay.mask])
    np.testing.assert_array_equal(real, np.arange(103))
    np.testing.assert_array_equal(lay.mask.sum(1), lay.sizes)
    # padded rows repeat a real row of the same shard
    for k in range(10):
        assert set(lay.indices[k, ~lay.mask[k]]) <= set(lay.indices[k, lay.mask[k]])


def test_random_is_seeded():
    a, b, c = (assign_points(50, 4, "random", seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)


def test_contiguous_blocks():
    lay = assign_points(10, 3, "contiguous")
    np.testing.assert_array_equal(lay.indices[0, :4], [0, 1, 2, 3])
    np.testing.assert_array_equal(lay.sizes, [4, 3, 3])


def test_stratified_gives_every_shard_its_share():
    strata = np.repeat([0, 1, 2], [300, 90, 31])
    lay = assign_points(strata.size, 7, "stratified", seed=0, strata=strata)
    for k in range(7):
        labels = strata[lay.indices[k, lay.mask[k]]]
        counts = np.bincount(labels, minlength=3)
        expected = np.array([300, 90, 31]) / 7
        assert np.all(np.abs(counts - expected) < 1), counts


def test_shard_arrays_gathers_rows():
    data = {"x": np.arange(20.0).reshape(10, 2), "y": np.arange(10)}
    lay = assign_points(10, 3, "contiguous")
    s = shard_arrays(data, lay, 2)
    np.testing.assert_array_equal(s["y"], [7, 8, 9, 7])
    assert s["x"].shape == (4, 2)


def test_unknown_strategy_and_empty_shards_refused():
    with pytest.raises(ShardMCInputError, match="sharding"):
        assign_points(10, 2, "blocks")
    with pytest.raises(ShardMCInputError, match="num_shards"):
        assign_points(3, 4, "random")
