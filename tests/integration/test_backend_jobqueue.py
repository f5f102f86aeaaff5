"""The dask backend's PBS and SLURM paths, end to end through dask-jobqueue, with stand-in
batch commands: ``qsub``/``sbatch`` on PATH copy the generated job script and run it
here in the background (its own process group), printing a job id; ``qdel``/``scancel``
kill that group. The scheduler and the workers listen on the loopback interface."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dask_jobqueue")

import shardmc
from shardmc import examples
from shardmc.backends.dask_cluster import DaskBackend

NUM_POINTS, NUM_SHARDS = 800, 2
SAMPLER = {"num_warmup": 100, "num_samples": 100, "num_chains": 2}
#: Seconds a cancelled stand-in job gets to exit.
EXIT_GRACE_SECONDS = 15.0

_SUBMIT = """#!/usr/bin/env bash
# stand-in {submit}: run the job script here, in the background, in its own session
jobs="{jobs}"
n=$(ls "$jobs" | grep -c '\\.sh$')
script="$jobs/job$n.sh"
cp "$1" "$script"
setsid nohup bash "$script" > "$jobs/job$n.log" 2>&1 < /dev/null &
echo $! >> "$jobs/ids"
echo "{template}"
"""
_CANCEL = """#!/usr/bin/env bash
# stand-in {cancel}: kill the job's process group
for id in "$@"; do kill -TERM -- "-$id" 2>/dev/null; done
exit 0
"""
_STATUS = """#!/usr/bin/env bash
exit 0
"""
BATCH = {"pbs": ("qsub", "qdel", "qstat", "$!.standin-pbs"),
         "slurm": ("sbatch", "scancel", "squeue", "Submitted batch job $!")}


class StandIn:
    """The fake batch system of one test: its folder of submitted scripts and logs."""

    def __init__(self, root: Path, kind: str) -> None:
        self.bin, self.jobs = root / "bin", root / "jobs"
        self.bin.mkdir()
        self.jobs.mkdir()
        submit, cancel, status, template = BATCH[kind]
        for name, text in ((submit, _SUBMIT.format(submit=submit, jobs=self.jobs,
                                                   template=template)),
                           (cancel, _CANCEL.format(cancel=cancel)), (status, _STATUS)):
            path = self.bin / name
            path.write_text(text)
            path.chmod(0o755)

    def ids(self) -> list[int]:
        path = self.jobs / "ids"
        return [int(x) for x in path.read_text().split()] if path.exists() else []

    def scripts(self) -> list[str]:
        return [p.read_text() for p in sorted(self.jobs.glob("job*.sh"))]

    def alive(self) -> list[int]:
        """Job process groups that still have a process."""
        out = []
        for pgid in self.ids():
            try:
                os.killpg(pgid, 0)
                out.append(pgid)
            except ProcessLookupError:
                pass
        return out

    def kill_all(self) -> None:
        for pgid in self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


@pytest.fixture(params=["pbs", "slurm"])
def standin(request, tmp_path, monkeypatch):
    fake = StandIn(tmp_path, request.param)
    monkeypatch.setenv("PATH", f"{fake.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    fake.kind = request.param
    yield fake
    fake.kill_all()  # whatever qdel/scancel left behind


@pytest.fixture(scope="module")
def data():
    return examples.linear_regression_data(NUM_POINTS, 2, seed=4)


@pytest.fixture(scope="module")
def reference(data):
    return shardmc.fit(examples.linear_regression_known_noise, data, NUM_SHARDS, seed=3,
                       **SAMPLER)


def _wait_until_gone(fake: StandIn) -> list[int]:
    deadline = time.monotonic() + EXIT_GRACE_SECONDS
    while fake.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    return fake.alive()


def test_batch_run_completes_through_dask_jobqueue(standin, data, reference):
    options = {"cluster": standin.kind, "queue": "debug", "account": "SHARDMC",
               "walltime": "00:10:00", "cores": 2, "memory": "12GiB", "processes": 2,
               "jobs": 1, "interface": "lo", "python": sys.executable,
               "job_script_prologue": ["echo shardmc-prologue-ran"]}
    with DaskBackend(**options) as backend:
        post = shardmc.fit(examples.linear_regression_known_noise, data, NUM_SHARDS, seed=3,
                           backend=backend, **SAMPLER)
        workers = backend.client.scheduler_info()["workers"]
        assert backend.client.scheduler.address.startswith("tcp://127.0.0.1:")
    assert len(workers) == 2 and all(a.startswith("tcp://127.0.0.1:") for a in workers)
    assert np.array_equal(post.unconstrained, reference.unconstrained)
    assert np.array_equal(post.shard_draws, reference.shard_draws)
    assert len(standin.ids()) == 1  # one job of two worker processes
    script = standin.scripts()[0]
    directives = {"pbs": ["#PBS -q debug", "#PBS -A SHARDMC", "#PBS -l walltime=00:10:00",
                          "#PBS -l select=1:ncpus=2:mem=12GB"],
                  "slurm": ["#SBATCH -p debug", "#SBATCH -A SHARDMC", "#SBATCH -t 00:10:00",
                            "#SBATCH --cpus-per-task=2", "#SBATCH --mem=12G"]}[standin.kind]
    for line in directives:
        assert line in script
    assert "export JAX_ENABLE_X64=1" in script and "--nworkers 2" in script
    assert "shardmc-prologue-ran" in (standin.jobs / "job0.log").read_text()
    assert _wait_until_gone(standin) == []  # close() cancelled the job: nothing leaks
