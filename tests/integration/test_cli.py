"""The shardmc command line: exit codes and messages for user mistakes."""

import subprocess
import sys

from shardmc.workflow.cli import EXIT_BAD_INPUT, main


def test_bad_shard_count_is_exit_code_2_with_one_line(capsys):
    assert main(["demo", "--shards", "0"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.strip() == "shardmc: error: --shards: expected an integer >= 1, found 0"


def test_entry_point_help_runs():
    out = subprocess.run([sys.executable, "-m", "shardmc", "demo", "--help"],
                         capture_output=True, text=True, check=True)
    assert "laminar-flow" in out.stdout or "--shards" in out.stdout
    from shardmc.xpcs.demo import DEMO_SHARDS

    assert f"default {DEMO_SHARDS}," in " ".join(out.stdout.split())  # help names the default


def test_config_template_is_written_and_loads_once_pointed_at_data(tmp_path, capsys):
    import yaml

    from shardmc.config import load_config
    from shardmc.xpcs import simulate, write_aps_u

    out = tmp_path / "cfg.yaml"
    assert main(["config", "--template", "static", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.lstrip().startswith("#") and "physics: static" in text
    write_aps_u(tmp_path / "data.h5", simulate("static", n_angles=2, n_t=12, seed=0)[0])
    cfg = yaml.safe_load(text)
    cfg["data"]["file"] = "data.h5"
    out.write_text(yaml.safe_dump(cfg))
    assert load_config(out).model.physics == "static"


def test_unknown_config_key_is_exit_code_2_naming_the_key(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data: {file: missing.h5}\nmodel: {physics: static, per_angle: auto}\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "model.per_angle" in err and "Traceback" not in err


def test_cluster_script_prints_the_pbs_job_script(tmp_path, capsys):
    from shardmc.xpcs import simulate, write_aps_u

    write_aps_u(tmp_path / "data.h5", simulate("static", n_angles=2, n_t=12, seed=0)[0])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "data: {file: data.h5}\nmodel: {physics: static}\n"
        "backend: {name: dask, cluster: pbs, queue: debug, account: XPCS, "
        "walltime: '00:45:00', cores: 32, memory: 256GB, interface: lo}\n")
    assert main(["cluster-script", "--config", str(cfg), "--set", "backend.jobs=4"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#!") and "#PBS -q debug" in script and "#PBS -A XPCS" in script
    assert "walltime=00:45:00" in script


def test_cluster_script_needs_a_batch_cluster(tmp_path, capsys):
    from shardmc.xpcs import simulate, write_aps_u

    write_aps_u(tmp_path / "data.h5", simulate("static", n_angles=2, n_t=12, seed=0)[0])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data: {file: data.h5}\nmodel: {physics: static}\nbackend: {name: dask}\n")
    assert main(["cluster-script", "--config", str(cfg)]) == EXIT_BAD_INPUT
    assert "pbs" in capsys.readouterr().err
