"""The run configuration: defaults, resolved round trip, overrides, templates, hashes, the
error message format, and config -> fit arguments."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from shardmc.backends import BACKENDS, ProcessesBackend
from shardmc.config import (
    RunConfig,
    backend_options,
    build_run,
    config_from_dict,
    config_hash,
    data_hash,
    load_config,
    resolved_yaml,
    template,
)
from shardmc.config.backends import ProcessesBackendConfig
from shardmc.config.schema import XPCS_SAMPLER_DEFAULTS, SamplingConfig
from shardmc.core.engine import fit
from shardmc.core.sampling import SamplerConfig
from shardmc.errors import ShardMCInputError
from shardmc.xpcs import PHYSICS_MODELS, save_npz, simulate, write_aps_u
from shardmc.xpcs.physics import DEFAULT_DT, DEFAULT_GAP


@pytest.fixture(scope="module")
def sim():
    return simulate("static", n_angles=3, n_t=12, seed=0, known_sigma=True)[0]


@pytest.fixture
def h5(tmp_path, sim) -> Path:
    return write_aps_u(tmp_path / "run.h5", sim)


def minimal(file: Path | str) -> dict:
    return {"data": {"file": str(file)}, "model": {"physics": "static"}}


def write(tmp_path: Path, cfg: dict | str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    return path


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(ShardMCInputError) as err:
        fn(*args, **kwargs)
    return str(err.value)


# -- defaults ---------------------------------------------------------------------------------
def test_defaults_follow_the_xpcs_demo(h5):
    cfg = config_from_dict(minimal(h5))
    assert cfg.data.file == h5 and cfg.data.format == "auto"
    assert (cfg.data.dt, cfg.data.gap, cfg.data.start_frame, cfg.data.end_frame) == (
        DEFAULT_DT, DEFAULT_GAP, 1, None)
    assert (cfg.sharding.num_shards, cfg.sharding.method) == (8, "stratified")
    assert cfg.model.likelihood == "rows"
    s = cfg.sampling
    assert s.warm_start and s.init_strategy == "value" and s.adapt_mass_matrix is True
    assert s.init_mass == "hessian" and s.num_warmup == XPCS_SAMPLER_DEFAULTS["num_warmup"]
    assert cfg.model.parameterization == "rates"
    assert (cfg.combine.method, cfg.combine.space) == ("consensus", "unconstrained")
    assert cfg.backend.name == "auto"
    assert (cfg.run.seed, cfg.run.on_shard_failure, cfg.run.progress) == (0, "fail", True)
    assert cfg.run.early_abort is True


def test_without_warm_start_chains_start_at_the_median_and_adapt(h5):
    cfg = config_from_dict({**minimal(h5), "sampling": {"warm_start": False}})
    assert cfg.sampling.init_strategy == "median" and cfg.sampling.adapt_mass_matrix is True


def test_physical_parameterization_keeps_the_laplace_mass_and_may_use_rate_space(h5):
    physical = {**minimal(h5), "model": {"physics": "static", "parameterization": "physical"}}
    cfg = config_from_dict(physical)
    assert cfg.sampling.adapt_mass_matrix is False
    both = config_from_dict({**physical, "combine": {"method": "rate_space_consensus"}})
    assert both.combine.method == "rate_space_consensus"
    with pytest.raises(ShardMCInputError, match=r"combine\.method"):
        config_from_dict({**minimal(h5), "combine": {"method": "rate_space_consensus"}})


def test_sampling_defaults_are_the_engines_except_the_xpcs_ones():
    ours = SamplingConfig().sampler_config()
    engine = SamplerConfig()
    xpcs_fields = {*XPCS_SAMPLER_DEFAULTS, "init_strategy", "adapt_mass_matrix"}
    for f in dataclasses.fields(SamplerConfig):
        if f.name not in xpcs_fields:
            assert getattr(ours, f.name) == getattr(engine, f.name), f.name
    assert set(SamplingConfig.model_fields) == {f.name for f in
                                                dataclasses.fields(SamplerConfig)} | {
        "warm_start"}


def test_processes_options_mirror_the_backend_constructor():
    params = inspect.signature(ProcessesBackend.__init__).parameters
    for name, field in ProcessesBackendConfig.model_fields.items():
        if name != "name":
            assert name in params, name
            assert field.default == params[name].default, name


def test_relative_data_file_resolves_against_the_config_folder(tmp_path, sim, monkeypatch):
    sub = tmp_path / "exp"
    sub.mkdir()
    write_aps_u(sub / "run.h5", sim)
    path = write(sub, minimal("run.h5"))
    monkeypatch.chdir(tmp_path)
    assert load_config(path).data.file == sub / "run.h5"


def test_npz_keeps_the_files_dt_and_gap(tmp_path, sim):
    npz = save_npz(tmp_path / "d.npz", sim)
    cfg = config_from_dict({**minimal(npz), "model": {"physics": "static", "noise": "known"}})
    assert cfg.data.dt is None and cfg.data.gap is None
    inputs = build_run(cfg)
    assert inputs.data.dt == sim.dt and "weight" in inputs.points  # 1/sigma² on the rows


def test_npz_angle_and_frame_selection(tmp_path, sim):
    npz = save_npz(tmp_path / "d.npz", sim)
    cfg = config_from_dict({"data": {"file": str(npz), "phi": [float(sim.phi[2])],
                                     "start_frame": 3, "end_frame": 10},
                            "model": {"physics": "static"}, "sharding": {"num_shards": 7}})
    data = build_run(cfg).data
    assert data.n_phi == 1 and data.n_t == 8 and data.phi[0] == sim.phi[2]
    np.testing.assert_allclose(data.t, sim.t[2:10] - sim.t[2])
    np.testing.assert_array_equal(data.c2[0], sim.c2[2, 2:10, 2:10])


# -- resolved form and hashes ------------------------------------------------------------------
FULL = {
    "model": {"physics": "laminar_flow", "per_angle_mode": "auto",
              "priors": {"D0": [1e3, 1e5], "alpha": {"kind": "truncated_normal", "loc": 0.0,
                                                     "scale": 0.5}}},
    "sharding": {"num_shards": 3, "method": "random"},
    "sampling": {"num_chains": 2, "target_accept_prob": 0.9},
    "combine": {"method": "consensus", "options": {"shrinkage": "pooled",
                                                   "shard_weights": [1, 1, 2]}},
    "run": {"seed": 7, "progress": False},
}
BACKEND_SECTIONS = [
    {"name": "sequential"},
    {"name": "processes", "workers": 1, "shard_timeout": None, "env": {"A": "1"}},
    {"name": "jax", "devices": 1},
    {"name": "auto", "workers": 1},
    {"name": "dask", "cluster": "slurm", "queue": "debug", "job_script_prologue": ["module "
     "load x"], "adaptive": {"maximum_jobs": 4}, "security": {"ca_file": "a", "cert": "b",
                                                               "key": "c"}},
    {"name": "dask", "security": True},
]


@pytest.mark.parametrize("backend", BACKEND_SECTIONS,
                         ids=[f"{b['name']}{i}" for i, b in enumerate(BACKEND_SECTIONS)])
def test_resolved_yaml_loads_back_to_an_equal_config(tmp_path, h5, backend):
    cfg = config_from_dict({**minimal(h5), **FULL, "backend": backend})
    text = resolved_yaml(cfg)
    again = load_config(write(tmp_path, text, "resolved.yaml"))
    assert again == cfg and config_hash(again) == config_hash(cfg)
    assert resolved_yaml(again) == text
    assert "null" in text and "init_strategy: value" in text  # every default written


def test_hash_ignores_key_order_and_changes_with_any_value(h5):
    a = config_from_dict({**minimal(h5), "run": {"seed": 1, "progress": True}})
    b = config_from_dict({"run": {"progress": True, "seed": 1}, **minimal(h5)})
    c = config_from_dict({**minimal(h5), "run": {"seed": 2}})
    assert config_hash(a) == config_hash(b) != config_hash(c)
    assert re.fullmatch(r"[0-9a-f]{64}", config_hash(a))


def test_data_hash_is_the_sha256_of_the_file(tmp_path):
    path = tmp_path / "big.bin"
    payload = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # several read chunks
    path.write_bytes(payload)
    assert data_hash(path) == hashlib.sha256(payload).hexdigest()


# -- overrides --------------------------------------------------------------------------------
def test_overrides_set_values_parsed_as_yaml(tmp_path, h5):
    path = write(tmp_path, minimal(h5))
    cfg = load_config(path, ["sampling.num_chains=2", "backend.name=processes",
                             "data.phi=[0, 120]", "combine.method=consensus",
                             "combine.options.shrinkage=none",
                             "data.end_frame=", "run.progress=false"])
    assert cfg.sampling.num_chains == 2 and cfg.backend.name == "processes"
    assert cfg.data.phi == [0.0, 120.0] and cfg.combine.options == {"shrinkage": "none"}
    assert cfg.data.end_frame is None and cfg.run.progress is False


@pytest.mark.parametrize(("override", "message"), [
    ("sampling.num_chains", r"override 'sampling\.num_chains': expected 'section\.key=value'"),
    ("=3", r"override '=3': expected 'section\.key=value'"),
    ("data.phi=[0, 1", r"override 'data\.phi=\[0, 1': the value is not valid YAML"),
    ("model.physics.x=1", r"model\.physics is 'static', not a section"),
    ("sampling.num_chainz=2", r"sampling\.num_chainz: unknown key"),
])
def test_bad_overrides_name_themselves(tmp_path, h5, override, message):
    msg = error_of(load_config, write(tmp_path, minimal(h5)), [override])
    assert re.search(message, msg), msg
    assert msg.startswith(str(tmp_path / "cfg.yaml")), msg


# -- templates --------------------------------------------------------------------------------
@pytest.mark.parametrize("physics", PHYSICS_MODELS)
def test_templates_load_once_the_data_file_exists(tmp_path, h5, physics):
    text = template(physics)
    assert "  file: run.h5 " in text
    path = write(tmp_path, text.replace("  file: run.h5 ", f"  file: {h5} "))
    cfg = load_config(path)
    assert cfg.model.physics == physics and cfg.sampling.init_strategy == "value"
    for section, model in RunConfig.model_fields.items():
        assert f"\n{section}:\n" in text
        ann = model.annotation
        for key in getattr(ann, "model_fields", {}):
            assert re.search(rf"\n  {key}: ", text), (section, key)
    assert all(line.startswith("#") or line == "" or line.startswith(" ")
               or line.endswith(":") for line in text.splitlines())


def test_template_lists_the_parameters_and_refuses_unknown_physics():
    text = template("two_component")
    assert "D0_sample" in text and "v_offset" in text and "num_warmup: 400" in text
    assert "gamma_dot_0" not in template("static")
    assert re.search(r"expected one of static, laminar_flow, two_component, found 'flow'",
                     error_of(template, "flow"))


# -- error format -----------------------------------------------------------------------------
@pytest.mark.parametrize(("changes", "line"), [
    ({"sampling": {"num_chains": -2}}, "sampling.num_chains: expected an integer >= 1, found -2"),
    ({"model": {"physics": "static", "physicz": 1}},
     "model.physicz: unknown key (allowed: physics, per_angle_mode, noise, shear_convention, "
     "parameterization, likelihood, "
     "priors)"),
    ({"model": {"physics": "laminar"}}, "model.physics: expected one of 'static', "
     "'laminar_flow', 'two_component', found 'laminar'"),
    ({"sampling": {"dense_mass": 1}}, "sampling.dense_mass: expected true or false, found 1"),
    ({"data": {"q": "abc"}}, "data.q: expected a number, found 'abc'"),
    ({"data": {"q": True}}, "data.q: expected a number, found True"),
    ({"data": {"phi": []}}, "data.phi: expected a list of at least 1 item(s), found []"),
    ({"data": {"phi": [0, "x"]}}, "data.phi[1]: expected a number, found 'x'"),
    ({"backend": {"name": "dask", "security": 3}},
     "backend.security: expected true or false or a mapping (key: value), found 3"),
    ({"backend": {"name": "dask", "adaptive": {"minimum_jobs": 1}}},
     "backend.adaptive.maximum_jobs: required key missing"),
    ({"backend": {"name": "sequential", "workers": 2}},
     "backend.workers: unknown key (allowed: name)"),
    ({"backend": {"devices": 2}}, "backend.devices: unknown key (allowed: name, workers, "
     "threads_per_worker, shard_timeout, max_retries)"),
    ({"combine": {"method": "consensus", "options": {"seed": 1}}},
     "combine.options.seed: expected an option of method 'consensus' (one of diagonal, "
     "shard_weights, shrinkage), found 'seed'"),
    ({"combine": {"method": "gaussian", "options": {"seed": 1}}},
     "combine.options.seed: expected no 'seed' option (the run's seed, run.seed, is used), "
     "found 1"),
    ({"combine": {"method": "consensus", "options": {"shard_weights": [1, 2]}}},
     "combine.options.shard_weights: expected 8 weights (one per shard, "
     "sharding.num_shards), found 2"),
])
def test_each_error_is_one_line_key_expected_found(tmp_path, h5, changes, line):
    cfg = minimal(h5)
    for key, value in changes.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    msg = error_of(load_config, write(tmp_path, cfg))
    assert f"{tmp_path / 'cfg.yaml'}: {line}" in msg.splitlines(), msg


def test_several_errors_give_one_line_each_and_no_pydantic_dump(h5):
    msg = error_of(config_from_dict, {"data": {"file": str(h5), "dt": -1},
                                      "model": {"physics": "x"}, "sampling": {"num_chains": 0},
                                      "extra": 1}, source="c.yaml")
    lines = msg.splitlines()
    assert len(lines) == 4 and all(ln.startswith("c.yaml: ") for ln in lines), msg
    assert "pydantic" not in msg and "Input should" not in msg


@pytest.mark.parametrize(("body", "message"), [
    ("data: [1\n", r"YAML syntax error"),
    ("- 1\n", r"expected a YAML mapping of sections .*found a list"),
    ("just text\n", r"expected a YAML mapping of sections .*found a str"),
    ("", r"data: required key missing"),
    ("!!python/object:os.system {}\n", r"YAML syntax error"),  # safe_load only
])
def test_unreadable_config_files(tmp_path, body, message):
    msg = error_of(load_config, write(tmp_path, body))
    assert re.search(message, msg), msg


def test_missing_config_file(tmp_path):
    assert "config file not found" in error_of(load_config, tmp_path / "none.yaml")


def test_config_from_dict_refuses_a_non_mapping():
    assert "expected a mapping of sections" in error_of(config_from_dict, [1, 2])


# -- config -> fit arguments --------------------------------------------------------------------
def test_build_run_returns_what_fit_needs(tmp_path, h5, sim):
    cfg = config_from_dict({**minimal(h5), "sharding": {"num_shards": 3},
                            "backend": {"name": "processes", "workers": 1},
                            "combine": {"method": "consensus",
                                        "options": {"shrinkage": "none"}},
                            "model": {"physics": "static", "priors": {"alpha": [-1, 1]}}})
    inputs = build_run(cfg)
    kw = inputs.fit_kwargs
    assert inputs.model.n_angles == sim.n_phi and inputs.model.prior["alpha"].lower == -1.0
    assert inputs.points["c2"].shape[0] == sim.n_phi * (sim.n_t - 1)  # one row per (angle, t1)
    assert "weight" not in inputs.points
    assert set(inputs.model_kwargs) >= {"t", "dt", "q", "gap", "phi"}
    np.testing.assert_array_equal(kw["strata"], inputs.points["phi_idx"])
    assert (kw["num_shards"], kw["sharding"], kw["seed"]) == (3, "stratified", 0)
    assert kw["backend"] == "processes" and kw["backend_options"]["workers"] == 1
    assert kw["backend_options"]["shard_timeout"] == 3600.0
    assert kw["combine_options"] == {"shrinkage": "none"} and kw["method"] == "consensus"
    default = build_run(config_from_dict(minimal(h5))).fit_kwargs
    assert default["method"] == "consensus" and default["combine_options"] == {}
    physical = build_run(config_from_dict({
        **minimal(h5), "model": {"physics": "static", "parameterization": "physical"},
        "combine": {"method": "rate_space_consensus"}}))
    assert physical.fit_kwargs["method"].__name__ == "rate_space_consensus"
    assert physical.model.parameterization == "physical"
    assert isinstance(kw["config"], SamplerConfig) and kw["config"].init_strategy == "value"
    assert inputs.warm_start is True
    params = inspect.signature(fit).parameters
    assert set(kw) <= set(params)


def test_dask_passes_only_the_options_set(h5):
    cfg = config_from_dict({**minimal(h5), "backend": {"name": "dask", "cluster": "pbs",
                                                       "jobs": 2}})
    assert backend_options(cfg.backend) == {"cluster": "pbs", "jobs": 2}
    if "dask" not in BACKENDS:  # the dask backend is being added separately
        assert "backend.name: expected a backend available here" in error_of(build_run, cfg)


def test_random_sharding_has_no_strata(h5):
    cfg = config_from_dict({**minimal(h5), "sharding": {"method": "random"}})
    assert build_run(cfg).fit_kwargs["strata"] is None


def test_docs_list_every_key():
    from shardmc.config.backends import DaskBackendConfig, JaxBackendConfig

    doc = (Path(__file__).parents[2] / "docs" / "config.md").read_text()
    models = [m.annotation for m in RunConfig.model_fields.values() if hasattr(
        m.annotation, "model_fields")] + [ProcessesBackendConfig, DaskBackendConfig,
                                          JaxBackendConfig]
    for model in models:
        for key in model.model_fields:
            assert f"| `{key}` |" in doc or key == "name", (model.__name__, key)
    assert "| `name` |" in doc
