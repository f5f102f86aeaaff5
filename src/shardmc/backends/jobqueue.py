"""Options of the ``dask`` backend, TLS, and its clusters: local, or PBS/SLURM jobs.

:func:`validate_options` checks every option (``ShardMCInputError`` naming
``backend.<option>``) before anything starts. :func:`start_jobqueue_cluster` builds a
``PBSCluster`` / ``SLURMCluster`` whose scheduler listens only on the interface the user
names; :func:`job_script` returns the script such a cluster would submit, without
starting anything.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from shardmc.backends.dask_worker import SLOT_RESOURCE, env_exports, worker_env
from shardmc.errors import ShardMCInputError

#: Cluster kinds of the dask backend.
CLUSTERS = ("local", "pbs", "slurm")
#: Keys of ``security`` when it names certificate files.
SECURITY_KEYS = ("ca_file", "cert", "key")
#: Keys of ``adaptive``.
ADAPTIVE_KEYS = ("minimum_jobs", "maximum_jobs")
#: Accepted walltimes: [D-]H[:MM[:SS]] (PBS and SLURM both read this form).
WALLTIME_PATTERN = re.compile(r"^(\d+-)?\d+(:[0-5]\d){0,2}$")
#: Name of the batch jobs (#PBS -N / #SBATCH -J).
JOB_NAME = "shardmc-worker"
#: Scheduler dashboard/HTTP address: loopback only (reach it with an ssh tunnel).
DASHBOARD_ADDRESS = "127.0.0.1:0"
#: Scheduler address shown in scripts printed before any scheduler exists.
PLACEHOLDER_ADDRESS = "<scheduler-address>:<port>"


@dataclass(frozen=True)
class DaskOptions:
    """The dask backend's options, validated (see :class:`DaskBackend` for meanings)."""

    cluster: str = "local"
    address: str | None = None
    workers: int | None = None
    queue: str | None = None
    account: str | None = None
    walltime: str | None = None
    cores: int = 1
    memory: str | None = None
    processes: int | None = None
    jobs: int = 1
    job_script_prologue: tuple[str, ...] = ()
    job_extra_directives: tuple[str, ...] = ()
    adaptive: Mapping[str, int] | None = None
    interface: str | None = None
    local_directory: str | None = None
    security: bool | Mapping[str, str] = False
    max_retries: int = 2
    python: str | None = None
    shard_timeout: float | None = None

    @property
    def batch(self) -> bool:
        """Workers come from PBS/SLURM jobs that shardmc submits."""
        return self.address is None and self.cluster in ("pbs", "slurm")

    @property
    def processes_per_job(self) -> int:
        return self.processes or self.cores


OPTION_NAMES = tuple(f.name for f in fields(DaskOptions))


def _err(name: str, expected: str, found: Any) -> ShardMCInputError:
    return ShardMCInputError(f"backend.{name}: expected {expected}, found {found!r}")


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _err(name, f"an integer >= {low}", value)
    return value


def _text(name: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise _err(name, "a non-empty string or null", value)
    return value


def _lines(name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise _err(name, "a list of strings", value)
    return tuple(value)


def _security(value: Any) -> bool | Mapping[str, str]:
    if isinstance(value, bool) or value is None:
        return bool(value)
    if not isinstance(value, Mapping) or set(value) != set(SECURITY_KEYS):
        raise _err("security", f"true, false or a mapping with keys {list(SECURITY_KEYS)}",
                   value)
    files = {}
    for key in SECURITY_KEYS:
        path = os.path.expanduser(value[key]) if isinstance(value[key], str) else None
        if path is None or not os.path.isfile(path):
            raise _err(f"security.{key}", "the path of an existing file", value[key])
        files[key] = os.path.abspath(path)
    return files


def _adaptive(value: Any) -> Mapping[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not set(value) <= set(ADAPTIVE_KEYS) \
            or "maximum_jobs" not in value:
        raise _err("adaptive", f"null or a mapping with keys {list(ADAPTIVE_KEYS)} "
                   "(maximum_jobs required)", value)
    low = _int("adaptive.minimum_jobs", value.get("minimum_jobs", 0), 0)
    high = _int("adaptive.maximum_jobs", value["maximum_jobs"], 1)
    if low > high:
        raise _err("adaptive.minimum_jobs", f"at most maximum_jobs ({high})", low)
    return {"minimum_jobs": low, "maximum_jobs": high}


def _check_memory(value: Any) -> str | None:
    if value is None:
        return None
    from dask.utils import parse_bytes

    try:
        ok = isinstance(value, str) and parse_bytes(value) > 0
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise _err("memory", "a memory size like '16GB'", value)
    return value


def _check_batch(opts: DaskOptions, need_interface: bool) -> None:
    if opts.memory is None:
        raise _err("memory", f"the memory of one {opts.cluster} job, e.g. '16GB'", None)
    if opts.processes is not None and opts.cores % opts.processes:
        raise _err("processes", f"a divisor of cores ({opts.cores})", opts.processes)
    if need_interface and opts.interface is None:
        raise _err("interface", "the network interface the scheduler listens on and the "
                   "workers connect through (e.g. 'ib0', 'hsn0'; nothing listens on all "
                   "interfaces by default)", None)


def validate_options(options: Mapping[str, Any], *, need_interface: bool = True
                     ) -> DaskOptions:
    """Checked options (ShardMCInputError naming ``backend.<option>``). ``name`` (the
    backend's name in a config) is ignored; PBS/SLURM keys are ignored for a local
    cluster, so one config can switch between them."""
    unknown = sorted(set(options) - set(OPTION_NAMES) - {"name"})
    if unknown:
        raise ShardMCInputError(f"backend.{unknown[0]}: unknown dask option; expected one of "
                                f"{list(OPTION_NAMES)}")
    o = {k: v for k, v in options.items() if k != "name"}
    cluster = o.get("cluster") or "local"
    if cluster not in CLUSTERS:
        raise _err("cluster", f"one of {list(CLUSTERS)}", cluster)
    address = _text("address", o.get("address"))
    security = _security(o.get("security", False))
    if address is not None:
        if cluster != "local":
            raise _err("cluster", "'local' or null when address names a running scheduler",
                       cluster)
        if not address.startswith(("tcp://", "tls://")):
            raise _err("address", "a scheduler address tcp://host:port or tls://host:port",
                       address)
        if address.startswith("tls://") != bool(security) or security is True:
            raise _err("security", "{ca_file, cert, key} for a tls:// address and false "
                       "for tcp:// (temporary credentials only fit clusters shardmc "
                       "starts)", security)
    timeout = o.get("shard_timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(
            timeout, (int, float)) or not timeout > 0):
        raise _err("shard_timeout", "a positive number of seconds or null", timeout)
    opts = DaskOptions(
        cluster=cluster, address=address,
        workers=None if o.get("workers") is None else _int("workers", o["workers"], 1),
        queue=_text("queue", o.get("queue")), account=_text("account", o.get("account")),
        walltime=_text("walltime", o.get("walltime")), cores=_int("cores", o.get("cores", 1), 1),
        memory=_check_memory(o.get("memory")),
        processes=None if o.get("processes") is None else _int("processes", o["processes"], 1),
        jobs=_int("jobs", o.get("jobs", 1), 1),
        job_script_prologue=_lines("job_script_prologue", o.get("job_script_prologue")),
        job_extra_directives=_lines("job_extra_directives", o.get("job_extra_directives")),
        adaptive=_adaptive(o.get("adaptive")), interface=_text("interface", o.get("interface")),
        local_directory=_text("local_directory", o.get("local_directory")),
        security=security, max_retries=_int("max_retries", o.get("max_retries", 2), 0),
        python=_text("python", o.get("python")),
        shard_timeout=None if timeout is None else float(timeout))
    if opts.walltime is not None and not WALLTIME_PATTERN.match(opts.walltime):
        raise _err("walltime", "[D-]HH:MM:SS, e.g. '01:00:00'", opts.walltime)
    if opts.batch:
        _check_batch(opts, need_interface)
    if security is True:
        try:
            import cryptography  # noqa: F401  (Security.temporary needs it)
        except ImportError:
            raise _err("security", "{ca_file, cert, key}: true (temporary self-signed "
                       "credentials) needs the 'cryptography' package, which is not "
                       "installed", True) from None
    return opts


def make_security(option: bool | Mapping[str, str], *, placeholders: bool = False) -> Any:
    """A ``distributed.Security`` for the option (None when TLS is off): True ->
    ``Security.temporary()`` (placeholder paths when only printing a script); a mapping
    -> the user's CA, certificate and key for every role, encryption required."""
    if option is False:
        return None
    from distributed.security import Security

    if option is True and not placeholders:
        return Security.temporary()
    files = (dict(option) if option is not True else
             {k: f"<temporary-{k}-written-at-start>" for k in SECURITY_KEYS})
    ca, cert, key = (files[k] for k in SECURITY_KEYS)
    return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key,
                    tls_scheduler_cert=cert, tls_scheduler_key=key,
                    tls_worker_cert=cert, tls_worker_key=key, require_encryption=True)


def job_kwargs(opts: DaskOptions) -> dict[str, Any]:
    """Keyword arguments of dask-jobqueue's PBS/SLURM job for these options. Each worker
    process takes one shard at a time (a ``shardmc_slot`` resource of 1) and gets
    cores / processes threads for OpenMP/MKL/OpenBLAS."""
    processes = opts.processes_per_job
    prologue = [*env_exports(opts.cores // processes), *opts.job_script_prologue]
    return {"cores": opts.cores, "memory": opts.memory, "processes": processes,
            "queue": opts.queue, "account": opts.account, "walltime": opts.walltime,
            "job_script_prologue": prologue,
            "job_extra_directives": list(opts.job_extra_directives),
            "interface": opts.interface, "local_directory": opts.local_directory,
            "python": opts.python or sys.executable, "job_name": JOB_NAME,
            "worker_extra_args": ["--resources", f"{SLOT_RESOURCE}=1"]}


def check_worker_memory(opts: DaskOptions, shard_bytes: int) -> None:
    """Refuse batch jobs whose memory share per worker process cannot hold one shard
    (``shard_bytes``: peak bytes of one process sampling one shard)."""
    from dask.utils import format_bytes, parse_bytes

    share = parse_bytes(opts.memory) // opts.processes_per_job
    if shard_bytes > share:
        raise ShardMCInputError(
            f"backend.memory: {opts.memory} per job over {opts.processes_per_job} worker "
            f"processes leaves {format_bytes(share)} per worker, but one shard needs about "
            f"{format_bytes(shard_bytes)}; give more memory or fewer processes per job")


def _classes(cluster: str) -> tuple[type, type]:
    if cluster == "pbs":
        from dask_jobqueue.pbs import PBSCluster, PBSJob

        return PBSCluster, PBSJob
    from dask_jobqueue.slurm import SLURMCluster, SLURMJob

    return SLURMCluster, SLURMJob


def job_script(options: Mapping[str, Any]) -> str:
    """The job script a ``dask`` backend with these options would submit to PBS/SLURM
    (the scheduler address is a placeholder until the scheduler starts). Starts nothing."""
    opts = validate_options(options, need_interface=False)
    if not opts.batch:
        raise ShardMCInputError(
            f"backend.cluster: expected 'pbs' or 'slurm' for a cluster script, found "
            f"{opts.cluster!r}" + (" with an address" if opts.address else ""))
    security = make_security(opts.security, placeholders=True)
    protocol = "tls" if security is not None else "tcp"
    job_cls = _classes(opts.cluster)[1]
    job = job_cls(scheduler=f"{protocol}://{PLACEHOLDER_ADDRESS}", name="<worker-name>",
                  protocol=f"{protocol}://" if security is not None else None,
                  security=security, **job_kwargs(opts))
    return job.job_script()


def start_local_cluster(opts: DaskOptions, workers: int) -> Any:
    """A LocalCluster of ``workers`` single-threaded worker processes on 127.0.0.1 with
    the worker environment (:func:`worker_env`), TLS if asked, dashboard on loopback."""
    import dask
    from distributed import LocalCluster

    security = make_security(opts.security)
    with dask.config.set({"distributed.scheduler.allowed-failures": opts.max_retries}):
        return LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=DASHBOARD_ADDRESS, silence_logs=logging.WARNING,
            security=security, protocol="tls://" if security is not None else None,
            env=worker_env(1), local_directory=opts.local_directory)


def start_jobqueue_cluster(opts: DaskOptions) -> Any:
    """Start a PBS/SLURM cluster's scheduler here (on ``opts.interface``, dashboard on
    loopback) and submit ``opts.jobs`` jobs, or let it adapt within ``opts.adaptive``."""
    import dask

    cluster_cls = _classes(opts.cluster)[0]
    security = make_security(opts.security)
    with dask.config.set({"distributed.scheduler.allowed-failures": opts.max_retries}):
        cluster = cluster_cls(
            security=security, silence_logs="warning",
            scheduler_options={"interface": opts.interface,
                               "dashboard_address": DASHBOARD_ADDRESS},
            **job_kwargs(opts))
    if opts.adaptive is not None:
        cluster.adapt(**opts.adaptive)
    else:
        cluster.scale(jobs=opts.jobs)
    return cluster
