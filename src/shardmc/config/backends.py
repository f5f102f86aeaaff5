"""Backend sections: a union discriminated on ``name``; each backend's options are its own
fields, so an option a backend does not take is an error naming ``backend.<key>``.

The ``processes`` fields mirror :class:`shardmc.backends.ProcessesBackend` (defaults
included, a test keeps them in step); ``dask`` lists the options of the dask backend
(null: that backend's default).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from shardmc.backends.processes import (
    DEFAULT_SHARD_TIMEOUT,
    HEARTBEAT_INTERVAL,
    HEARTBEAT_TIMEOUT,
    STARTUP_TIMEOUT,
)
from shardmc.config.types import Bool, Count, NonNegInt, Positive, Section, Text

BACKEND_NAMES = ("sequential", "processes", "jax", "dask", "auto")


class SequentialBackendConfig(Section):
    name: Literal["sequential"]


class ProcessesBackendConfig(Section):
    name: Literal["processes"]
    workers: Count | None = Field(None, description="worker processes; null: one per "
                                  "physical core")
    threads_per_worker: Count | None = Field(None, description="threads per worker; null: "
                                             "cores / workers")
    shard_timeout: Positive | None = Field(DEFAULT_SHARD_TIMEOUT, description="wall seconds "
                                           "per shard attempt; null: no limit")
    max_retries: NonNegInt = Field(1, description="reruns of a shard whose worker died, "
                                   "hung or timed out")
    heartbeat_interval: Positive = Field(HEARTBEAT_INTERVAL, description="seconds between "
                                         "worker heartbeats")
    heartbeat_timeout: Positive = Field(HEARTBEAT_TIMEOUT, description="silence (s) after "
                                        "which a worker counts as hung")
    startup_timeout: Positive = Field(STARTUP_TIMEOUT, description="seconds a new worker "
                                      "has to start")
    pin: Bool = Field(True, description="pin workers to disjoint cores")
    compile_cache: Bool | Text = Field(True, description="persistent compilation cache: "
                                       "true, false or a folder")
    platform: Text = Field("cpu", description="JAX platform of the workers")
    env: dict[str, Text] | None = Field(None, description="extra environment variables of "
                                        "the workers")


class AutoBackendConfig(Section):
    name: Literal["auto"] = Field("auto", description="where shards run: auto (picked "
                                  "from the machine and the run, reason in run.log) | "
                                  "sequential | processes | jax | dask")
    workers: Count | None = Field(None, description="processes backend: worker count")
    threads_per_worker: Count | None = Field(None, description="processes backend: threads")
    shard_timeout: Positive | None = Field(None, description="processes backend: seconds "
                                           "per shard attempt")
    max_retries: NonNegInt | None = Field(None, description="processes backend: reruns")


class JaxBackendConfig(Section):
    name: Literal["jax"]
    devices: Count | None = Field(None, description="JAX devices to use; null: all")


class DaskAdaptive(Section):
    minimum_jobs: NonNegInt = Field(0, description="fewest batch jobs")
    maximum_jobs: Count = Field(description="most batch jobs")


class DaskSecurity(Section):
    ca_file: Text = Field(description="CA certificate file")
    cert: Text = Field(description="certificate file")
    key: Text = Field(description="private key file")


class DaskBackendConfig(Section):
    name: Literal["dask"]
    cluster: Literal["local", "pbs", "slurm"] = Field("local", description="cluster kind")
    address: Text | None = Field(None, description="scheduler address of a running cluster")
    workers: Count | None = Field(None, description="workers (local) ")
    queue: Text | None = Field(None, description="batch queue / partition")
    account: Text | None = Field(None, description="batch account / project")
    walltime: Text | None = Field(None, description="batch job walltime, e.g. '01:00:00'")
    cores: Count | None = Field(None, description="cores per batch job")
    memory: Text | None = Field(None, description="memory per batch job, e.g. '16GB'")
    processes: Count | None = Field(None, description="worker processes per batch job")
    jobs: Count | None = Field(None, description="batch jobs to start")
    job_script_prologue: list[Text] | None = Field(None, description="shell lines run "
                                                   "before the worker starts")
    job_extra_directives: list[Text] | None = Field(None, description="extra #PBS/#SBATCH "
                                                    "directives")
    adaptive: DaskAdaptive | None = Field(None, description="adaptive scaling "
                                          "{minimum_jobs, maximum_jobs}; null: fixed jobs")
    interface: Text | None = Field(None, description="network interface, e.g. ib0")
    local_directory: Text | None = Field(None, description="worker scratch folder")
    security: Bool | DaskSecurity | None = Field(None, description="TLS: true (temporary "
                                                 "credentials) or {ca_file, cert, key}")
    max_retries: NonNegInt | None = Field(None, description="reruns of a lost shard")
    python: Text | None = Field(None, description="python executable of the workers")
    shard_timeout: Positive | None = Field(None, description="wall seconds per shard")


BackendConfig = Annotated[
    SequentialBackendConfig | ProcessesBackendConfig | JaxBackendConfig | DaskBackendConfig
    | AutoBackendConfig,
    Field(discriminator="name"),
]


def backend_options(backend: BaseModel) -> dict[str, Any]:
    """Options passed to the backend's constructor (processes: all; others: those set)."""
    options = backend.model_dump(exclude={"name"}, exclude_none=True)
    if isinstance(backend, ProcessesBackendConfig):
        options = backend.model_dump(exclude={"name"})
    return options


