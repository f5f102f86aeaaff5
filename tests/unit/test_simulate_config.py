"""The config `shardmc simulate` writes: shards large enough to mix (SIMULATED_SHARD_POINTS)."""

from __future__ import annotations

import yaml

from shardmc.workflow.cli import main
from shardmc.xpcs.simulate_files import (
    CONFIG_FILE,
    DEFAULT_SIMULATED_SHARDS,
    SIMULATED_SHARD_POINTS,
    simulated_shards,
    write_synthetic,
)


def test_one_shard_per_shard_points_between_one_and_the_default():
    assert simulated_shards(10) == 1
    assert simulated_shards(2 * SIMULATED_SHARD_POINTS - 1) == 1
    assert simulated_shards(2 * SIMULATED_SHARD_POINTS) == 2
    assert simulated_shards(10**7) == DEFAULT_SIMULATED_SHARDS


def _shards(folder) -> int:
    return yaml.safe_load((folder / CONFIG_FILE).read_text())["sharding"]["num_shards"]


def test_written_config_takes_the_rule_unless_shards_are_given(tmp_path):
    write_synthetic(tmp_path / "auto", n_angles=3, n_frames=100)  # 14 850 points
    assert _shards(tmp_path / "auto") == 14_850 // SIMULATED_SHARD_POINTS
    write_synthetic(tmp_path / "given", n_angles=1, n_frames=8, num_shards=3)
    assert _shards(tmp_path / "given") == 3


def test_simulate_command_says_how_it_chose(tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path), "--angles", "1", "--frames", "8"]) == 0
    out = capsys.readouterr().out
    assert "num_shards 1: shards of at least 5000 points" in out and "Next: shardmc run" in out
