"""The shardmc command line: exit codes and messages for user mistakes."""

import subprocess
import sys

from shardmc.cli import EXIT_BAD_INPUT, main


def test_bad_shard_count_is_exit_code_2_with_one_line(capsys):
    assert main(["demo", "--shards", "0"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.strip() == "shardmc: error: --shards: expected an integer >= 1, found 0"


def test_entry_point_help_runs():
    out = subprocess.run([sys.executable, "-m", "shardmc.cli", "demo", "--help"],
                         capture_output=True, text=True, check=True)
    assert "laminar-flow" in out.stdout or "--shards" in out.stdout
