"""The scientist's workflow through the real command line, in real processes:
simulate -> run -> report; a run killed with SIGKILL and resumed gives the same posterior
bit for bit; runs refuse to overwrite, and resume refuses a changed config."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import shardmc
from shardmc.workflow.cli import EXIT_BAD_INPUT, EXIT_OK

#: A small static dataset and short chains: the whole module runs in about a minute.
K = 6
OVERRIDES = ["--set", "sampling.num_chains=1", "--set", "sampling.num_warmup=150",
             "--set", "sampling.num_samples=150", "--set", "combine.importance_refine=true"]
#: Seconds allowed for one CLI call, and for the killed run to write its first shards.
CALL_TIMEOUT = 600
KILL_WAIT = 300


def cli(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "shardmc", *args], capture_output=True,
                          text=True, timeout=CALL_TIMEOUT, env=env, **kw)
    if check and proc.returncode != EXIT_OK:
        raise AssertionError(f"shardmc {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sim")
    cli("simulate", "--out", str(folder), "--physics", "static", "--angles", "2",
        "--frames", "40", "--shards", str(K), "--seed", "1")
    return folder


@pytest.fixture(scope="module")
def finished_run(sim, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "full"
    cli("run", str(sim / "config.yaml"), *OVERRIDES, "--out", str(out), "--no-progress")
    return out


def test_simulate_writes_data_truth_and_config(sim):
    assert (sim / "data.h5").is_file()
    truth = json.loads((sim / "data.truth.json").read_text())
    assert {"D0", "alpha", "D_offset"} <= set(truth)
    cfg = yaml.safe_load((sim / "config.yaml").read_text())
    assert cfg["model"]["physics"] == "static" and cfg["sharding"]["num_shards"] == K


def test_run_writes_every_output_and_each_loads(finished_run):
    out = finished_run
    post = shardmc.load(out / "posterior.nc")
    assert post.num_shards == K and {"D0", "alpha", "D_offset"} <= set(post.samples)
    refine = post.provenance["refine"]  # combine.importance_refine
    assert refine["proposal_draws"] == 150 and refine["importance_ess"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["state"] == "finished" and manifest["num_shards"] == K
    assert sorted(s["index"] for s in manifest["shards"]) == list(range(K))
    assert len(manifest["config_hash"]) == len(manifest["data_hash"]) == 64
    summary = json.loads((out / "summary.json").read_text())
    assert {r["parameter"] for r in summary["parameters"]} >= {"D0", "alpha", "D_offset"}
    assert all(r["truth"] is not None for r in summary["parameters"]
               if r["parameter"] in ("D0", "alpha", "D_offset"))
    phases = summary["phase_seconds"]  # wall seconds of each phase of the run
    assert {"load", "warm_start", "fit", "fit.setup", "fit.shards", "fit.combine",
            "fit.deterministics", "importance", "outputs", "report"} <= set(phases)
    assert 0 < phases["fit.shards"] <= phases["fit"] <= summary["seconds"]
    assert {f"fit.{k}" for k in post.provenance["phase_seconds"]} <= set(phases)
    assert "run phases (s): load" in (out / "run.log").read_text()
    with np.load(out / "fit.npz", allow_pickle=False) as fit:
        assert fit["c2"].shape == fit["fitted"].shape == fit["residual"].shape
        assert fit["c2"].shape[0] == 2
    from shardmc.config import load_config
    load_config(out / "config.yaml")  # the resolved config loads back
    assert len(list((out / "shards").glob("shard-*.npz"))) == K
    assert (out / "run.log").stat().st_size > 0
    assert json.loads((out / "warm_start.json").read_text())["init_values"]
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert {"corner.png", "shard_forest.png", "divergences.png"} <= set(pngs)
    assert any(p.startswith("c2_angle_") for p in pngs)
    html = (out / "report.html").read_text()
    assert "D_offset" in html and "data:image/png;base64," in html


def test_report_command_rewrites_the_report(finished_run):
    (finished_run / "report.html").unlink()
    proc = cli("report", str(finished_run))
    assert "report.html" in proc.stdout and (finished_run / "report.html").is_file()


def test_run_into_a_non_empty_directory_refuses(sim, finished_run):
    proc = cli("run", str(sim / "config.yaml"), "--out", str(finished_run), check=False)
    assert proc.returncode == EXIT_BAD_INPUT
    assert "not empty" in proc.stderr and "resume" in proc.stderr
    assert "Traceback" not in proc.stderr


def _posterior_arrays(run: Path) -> dict[str, np.ndarray]:
    post = shardmc.load(run / "posterior.nc")
    return {"unconstrained": post.unconstrained, **post.samples}


def test_killed_run_resumes_to_a_bit_identical_posterior(sim, finished_run, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardmc", "run", str(sim / "config.yaml"), *OVERRIDES,
         "--out", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + KILL_WAIT
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((out / "shards").glob("shard-*.npz"))) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    kept = sorted(p.name for p in (out / "shards").glob("shard-*.npz"))
    assert 2 <= len(kept) < K, kept
    assert not (out / "posterior.nc").exists()
    # a partial file from a write in flight must never count as a finished shard
    (out / "shards" / ".shard-00005-of-00006.npz.abc.tmp").write_bytes(b"partial")

    resumed = cli("resume", str(out), "--no-progress")
    assert f"{len(kept)} shard file(s) on disk" in resumed.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["state"] == "finished"
    a, b = _posterior_arrays(finished_run), _posterior_arrays(out)
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_resume_refuses_a_changed_config(finished_run, tmp_path):
    import shutil
    copy = tmp_path / "changed"
    shutil.copytree(finished_run, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["run"]["seed"] = cfg["run"]["seed"] + 1
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = cli("resume", str(copy), check=False)
    assert proc.returncode == EXIT_BAD_INPUT
    assert "config changed" in proc.stderr and "Traceback" not in proc.stderr
