"""PBS/SLURM job scripts of the dask backend and its option checks (nothing is started)."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("dask_jobqueue")

from shardmc.backends import select_backend
from shardmc.backends.dask_cluster import DaskBackend, job_script
from shardmc.errors import ShardMCInputError

PBS = {"cluster": "pbs", "queue": "prod", "account": "XPCS", "walltime": "02:00:00",
       "cores": 32, "memory": "480GB", "processes": 32,
       "job_extra_directives": ["-l filesystems=home:eagle"],
       "job_script_prologue": ["module use /soft/modulefiles", "module load conda"]}
SLURM = {"cluster": "slurm", "queue": "cpu", "account": "m1234", "walltime": "1-00:00:00",
         "cores": 8, "memory": "32GB", "processes": 4, "job_extra_directives": ["-C cpu"]}


def _lines(script: str) -> list[str]:
    return script.splitlines()


def test_pbs_script_has_the_requested_directives_and_worker_setup():
    script = job_script(PBS)
    lines = _lines(script)
    assert lines[0] == "#!/usr/bin/env bash"
    for line in ("#PBS -q prod", "#PBS -A XPCS", "#PBS -l walltime=02:00:00",
                 "#PBS -l select=1:ncpus=32:mem=448GB", "#PBS -l filesystems=home:eagle",
                 "#PBS -N shardmc-worker"):
        assert line in lines
    exports = lines.index("export JAX_ENABLE_X64=1")
    assert lines.index("module load conda") > exports  # the user's lines come last
    for name in ("JAX_PLATFORMS=cpu", "OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1"):
        assert f"export {name}" in lines
    worker = lines[-1]
    assert worker.startswith(f"{sys.executable} -m distributed.cli.dask_worker tcp://")
    assert "--nthreads 1" in worker and "--nworkers 32" in worker
    assert "--resources shardmc_slot=1" in worker


def test_slurm_script_has_the_requested_directives():
    lines = _lines(job_script({**SLURM, "interface": "ib0", "python": "/opt/env/bin/python",
                               "local_directory": "/tmp/scratch"}))
    for line in ("#SBATCH -p cpu", "#SBATCH -A m1234", "#SBATCH -t 1-00:00:00",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=30G", "#SBATCH -C cpu"):
        assert line in lines
    assert "export OMP_NUM_THREADS=2" in lines  # 8 cores over 4 worker processes
    worker = lines[-1]
    assert worker.startswith("/opt/env/bin/python -m distributed.cli.dask_worker")
    for part in ("--interface ib0", "--local-directory /tmp/scratch", "--nworkers 4",
                 "--nthreads 2"):
        assert part in worker


def test_script_with_tls_certificate_files(tmp_path):
    files = {}
    for key in ("ca_file", "cert", "key"):
        files[key] = str(tmp_path / f"{key}.pem")
        (tmp_path / f"{key}.pem").write_text("x")
    worker = _lines(job_script({**PBS, "security": files}))[-1]
    assert "tls://" in worker and "--protocol tls://" in worker
    assert f"--tls-ca-file {files['ca_file']}" in worker
    assert f"--tls-cert {files['cert']} --tls-key {files['key']}" in worker


def test_script_ignores_the_config_name_key():
    assert job_script({"name": "dask", **SLURM}) == job_script(SLURM)


def test_script_for_a_local_cluster_is_refused():
    with pytest.raises(ShardMCInputError, match=r"backend\.cluster: expected 'pbs' or 'slurm'"):
        job_script({"cluster": "local"})


@pytest.mark.parametrize("options, message", [
    ({"cluster": "sge"}, "backend.cluster: expected one of ['local', 'pbs', 'slurm'], "
                         "found 'sge'"),
    ({"cluster": "pbs", "cores": 4}, "backend.memory: expected the memory of one pbs job"),
    ({**PBS, "memory": "lots"}, "backend.memory: expected a memory size like '16GB'"),
    ({**PBS, "cores": 0}, "backend.cores: expected an integer >= 1, found 0"),
    ({**PBS, "processes": 5}, "backend.processes: expected a divisor of cores (32), found 5"),
    ({**PBS, "walltime": "2 hours"}, "backend.walltime: expected [D-]HH:MM:SS"),
    ({**PBS, "jobs": 0}, "backend.jobs: expected an integer >= 1"),
    ({**PBS, "job_extra_directives": "-l x"}, "backend.job_extra_directives: expected a "
                                              "list of strings"),
    ({**PBS, "adaptive": {"minimum_jobs": 3, "maximum_jobs": 2}},
     "backend.adaptive.minimum_jobs: expected at most maximum_jobs (2), found 3"),
    ({**PBS, "adaptive": {"minimum_jobs": 1}}, "backend.adaptive: expected null or a mapping"),
    ({**PBS, "security": {"ca_file": "/nonexistent", "cert": "/x", "key": "/y"}},
     "backend.security.ca_file: expected the path of an existing file"),
    ({**PBS, "security": "yes"}, "backend.security: expected true, false or a mapping"),
    ({**PBS, "max_retries": -1}, "backend.max_retries: expected an integer >= 0, found -1"),
    ({**PBS, "shard_timeout": 0}, "backend.shard_timeout: expected a positive number"),
    ({**PBS, "queues": "x"}, "backend.queues: unknown dask option"),
])
def test_bad_options_name_the_key(options, message):
    with pytest.raises(ShardMCInputError) as info:
        job_script(options)
    assert message in str(info.value)


@pytest.mark.parametrize("options, message", [
    ({"cluster": "pbs", "memory": "16GB"}, "backend.interface: expected the network interface"),
    ({"address": "tcp://10.0.0.1:8786", "cluster": "slurm"},
     "backend.cluster: expected 'local' or null when address names a running scheduler"),
    ({"address": "10.0.0.1:8786"}, "backend.address: expected a scheduler address"),
    ({"address": "tls://10.0.0.1:8786"}, "backend.security: expected {ca_file, cert, key} "
                                         "for a tls:// address"),
    ({"workers": 10_000}, "backend.workers: expected at most"),
    ({"workers": 0}, "backend.workers: expected an integer >= 1, found 0"),
])
def test_backend_refuses_bad_options_before_starting_anything(options, message):
    with pytest.raises(ShardMCInputError) as info:
        DaskBackend(**options)
    assert message in str(info.value)
    with pytest.raises(ShardMCInputError):
        select_backend("dask", **options)


def test_backend_construction_starts_nothing():
    backend = select_backend("dask", workers=1, max_retries=1, shard_timeout=60)
    assert backend.capabilities.name == "dask" and backend.capabilities.multi_process
    assert backend.capabilities.parallel_shards == 1
    assert backend.client is None and backend.cluster is None
    backend.close()  # closing an unstarted backend is fine
    batch = DaskBackend(**{**PBS, "jobs": 4, "interface": "lo"})
    assert batch.capabilities.parallel_shards == 4 * 32
    assert "#PBS -q prod" in batch.job_script()


def test_batch_memory_share_must_hold_one_shard():
    from shardmc.backends.resources import Workload

    backend = DaskBackend(**{**PBS, "memory": "8GB", "interface": "lo"})
    with pytest.raises(ShardMCInputError, match=r"backend\.memory: 8GB per job over 32 worker"):
        backend.estimate_memory(Workload(64, 12_500, 8, 2, 200, 300))
    assert DaskBackend(**{**PBS, "interface": "lo"}).estimate_memory(
        Workload(64, 12_500, 8, 2, 200, 300)) == 0
