"""The YAML run configuration of ``shardmc run``: schema, loading, templates, run inputs.

    cfg = load_config("cfg.yaml", overrides=["sampling.num_chains=2"])
    inputs = build_run(cfg)             # data, model, points, model_kwargs, fit_kwargs
    post = shardmc.fit(inputs.model, inputs.points, model_kwargs=inputs.model_kwargs,
                       init_values=..., **inputs.fit_kwargs)

Every mistake raises ShardMCInputError with one line per problem,
``<key.path>: expected <what>, found <value>``. See docs/config.md for every key.
"""

from __future__ import annotations

from shardmc.config.backends import BackendConfig, backend_options
from shardmc.config.build import RunInputs, build_run, data_hash, fit_kwargs, load_data
from shardmc.config.io import (
    apply_overrides,
    config_dict,
    config_from_dict,
    config_hash,
    load_config,
    parse_override,
    resolved_yaml,
)
from shardmc.config.schema import (
    CombineConfig,
    DataConfig,
    ModelConfig,
    PriorOverride,
    RunConfig,
    RunSection,
    SamplingConfig,
    ShardingConfig,
)
from shardmc.config.template import template

__all__ = [
    "BackendConfig",
    "CombineConfig",
    "DataConfig",
    "ModelConfig",
    "PriorOverride",
    "RunConfig",
    "RunInputs",
    "RunSection",
    "SamplingConfig",
    "ShardingConfig",
    "apply_overrides",
    "backend_options",
    "build_run",
    "config_dict",
    "config_from_dict",
    "config_hash",
    "data_hash",
    "fit_kwargs",
    "load_config",
    "load_data",
    "parse_override",
    "resolved_yaml",
    "template",
]
