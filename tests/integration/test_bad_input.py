"""Bad input of ``shardmc run``: each case writes a bad config and/or data file and must be
refused before any sampling with a ShardMCInputError that names the key or dataset.

Cases do not know how they are checked: :func:`check_run_inputs` is the one place that
turns a config path (+ CLI overrides) into a run's inputs; swap it for the CLI
(``shardmc run PATH`` -> exit code 2) without touching the cases.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml

from shardmc.config import build_run, load_config
from shardmc.errors import ShardMCInputError
from shardmc.workflow.cli import EXIT_BAD_INPUT, main
from shardmc.xpcs import XPCSData, save_npz, simulate, write_aps_u
from shardmc.xpcs.loaders import APS_U_BINS, APS_U_MAPS, APS_U_PHI

N_T = 20  # frames of the valid file
POINTS = 2 * N_T * (N_T - 1) // 2  # two angles, upper triangle
ROWS = 2 * (N_T - 1)  # two angles, one frame row per t1 < N_T - 1


def check_run_inputs(config_path: Path, overrides: Sequence[str] = ()) -> None:
    """Everything ``shardmc run`` checks before sampling."""
    build_run(load_config(config_path, overrides))


@dataclass(frozen=True)
class Invocation:
    config: Path
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path, XPCSData], Invocation]
    message: str  # regex the error message must match


@pytest.fixture(scope="module")
def sim() -> XPCSData:
    return simulate("static", n_angles=2, n_t=N_T, seed=0)[0]


# -- writers -------------------------------------------------------------------------------
def base_config(file: str = "run.h5") -> dict[str, Any]:
    return {"data": {"file": file, "q": 0.0054, "dt": 0.1},
            "model": {"physics": "static"},
            "sharding": {"num_shards": 2},
            "sampling": {"num_chains": 1, "num_warmup": 10, "num_samples": 10}}


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def write_yaml(tmp: Path, cfg: dict[str, Any]) -> Path:
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def valid_h5(tmp: Path, sim: XPCSData) -> Path:
    return write_aps_u(tmp / "run.h5", sim)


def config(changes: dict[str, Any] | None = None, *, overrides: Sequence[str] = (),
           h5: Callable[[h5py.File], None] | None = None) -> Callable:
    """A case writer: the valid HDF5 file (optionally corrupted by ``h5``) and the base
    config with ``changes`` merged in (a value None under a key deletes it)."""
    def make(tmp: Path, sim: XPCSData) -> Invocation:
        path = valid_h5(tmp, sim)
        if h5 is not None:
            with h5py.File(path, "a") as f:
                h5(f)
        cfg = merge(base_config(), changes or {})
        return Invocation(write_yaml(tmp, cfg), tuple(overrides))
    return make


def text(body: str) -> Callable:
    """A case writer whose config file holds ``body`` verbatim (next to a valid file)."""
    def make(tmp: Path, sim: XPCSData) -> Invocation:
        valid_h5(tmp, sim)
        path = tmp / "cfg.yaml"
        path.write_text(body)
        return Invocation(path)
    return make


def data_file(name: str, write: Callable[[Path, XPCSData], None],
              changes: dict[str, Any] | None = None) -> Callable:
    """A case writer: ``write(path, sim)`` makes the data file ``name``."""
    def make(tmp: Path, sim: XPCSData) -> Invocation:
        write(tmp / name, sim)
        cfg = merge(base_config(name), changes or {})
        if not name.endswith((".h5", ".hdf5", ".hdf")):
            cfg["data"] = {k: v for k, v in cfg["data"].items() if k not in ("dt",)}
        return Invocation(write_yaml(tmp, cfg))
    return make


def replace_dataset(name: str, value: Any) -> Callable[[h5py.File], None]:
    def fn(f: h5py.File) -> None:
        del f[name]
        f.create_dataset(name, data=value)
    return fn


def matrix_with(sim: XPCSData, angle: int, i: int, j: int, value: float) -> np.ndarray:
    half = np.triu(sim.c2[angle]).copy()
    half[i, j] = value
    return half


def npz(changes: Callable[[XPCSData], dict[str, Any]],
        cfg: dict[str, Any] | None = None, drop: Sequence[str] = ()) -> Callable:
    """A case writer: an NPZ of the simulated data with ``changes(sim)`` and keys ``drop``
    removed, and the base config pointing to it with ``cfg`` merged in."""
    def make(tmp: Path, sim: XPCSData) -> Invocation:
        arrays = {"c2": sim.c2, "t": sim.t, "q": sim.q, "phi": sim.phi, "dt": sim.dt,
                  "gap": sim.gap, **changes(sim)}
        np.savez(tmp / "run.npz", **{k: v for k, v in arrays.items() if k not in drop})
        return data_file("run.npz", lambda p, s: None, cfg)(tmp, sim)
    return make


def nan_c2(sim: XPCSData) -> dict[str, Any]:
    c2 = sim.c2.copy()
    c2[1, 3, 7] = c2[1, 7, 3] = np.nan
    return {"c2": c2}


def corrupt_with_sim(fn: Callable[[XPCSData], Callable[[h5py.File], None]]) -> Callable:
    """A case writer whose HDF5 corruption needs the simulated arrays."""
    def make(tmp: Path, sim: XPCSData) -> Invocation:
        return config(h5=fn(sim))(tmp, sim)
    return make


def garbage(path: Path, _: XPCSData) -> None:
    path.write_bytes(b"this is not a data file\n" * 10)


def h5_with(datasets: dict[str, Any]) -> Callable[[Path, XPCSData], None]:
    def write(path: Path, _: XPCSData) -> None:
        with h5py.File(path, "w") as f:
            for name, value in datasets.items():
                f.create_dataset(name, data=value)
    return write


MAP2 = f"{APS_U_MAPS}/c2_00002"
MAP1 = f"{APS_U_MAPS}/c2_00001"

CONFIG_CASES = [
    Case("unknown_top_level_key", config({"sampler": {"num_chains": 2}}),
         r"cfg\.yaml: sampler: unknown key \(allowed: data, model, sharding, sampling"),
    Case("unknown_nested_key", config({"model": {"physicz": "static"}}),
         r"model\.physicz: unknown key \(allowed: physics, per_angle_mode"),
    Case("wrong_type_count", config({"sampling": {"num_chains": "four"}}),
         r"sampling\.num_chains: expected an integer, found 'four'"),
    Case("wrong_type_bool", config({"run": {"progress": "maybe"}}),
         r"run\.progress: expected true or false, found 'maybe'"),
    Case("wrong_type_section", config({"sharding": [2]}),
         r"sharding: expected a mapping \(key: value\), found \[2\]"),
    Case("negative_count", config({"sampling": {"num_samples": -5}}),
         r"sampling\.num_samples: expected an integer >= 1, found -5"),
    Case("zero_shards", config({"sharding": {"num_shards": 0}}),
         r"sharding\.num_shards: expected an integer >= 1, found 0"),
    Case("missing_data_file", config({"data": {"file": "elsewhere.h5"}}),
         r"data\.file: expected an existing data file, found '.*elsewhere\.h5' \(missing\)"),
    Case("missing_model_section", text("data: {file: run.h5}\n"),
         r"model: required key missing"),
    Case("missing_physics", config({"model": {"physics": None}}),
         r"model\.physics: expected one of 'static', 'laminar_flow', 'two_component', "
         r"found None"),
    Case("prior_bounds_reversed", config({"model": {"priors": {"D0": [1e5, 1e3]}}}),
         r"model\.priors\.D0: expected finite lower < upper, found \[100000\.0, 1000\.0\]"),
    Case("prior_loc_outside_bounds", config({"model": {"priors": {"alpha": {
        "kind": "truncated_normal", "loc": 5.0, "scale": 0.5}}}}),
         r"model\.priors\.alpha: expected loc within \[-2\.0, 2\.0\], found loc=5\.0"),
    Case("prior_log_kind_nonpositive_lower", config({"model": {"priors": {"D0": [-1.0, 10.0]}}}),
         r"model\.priors\.D0: expected lower > 0 for kind 'log_uniform', found -1\.0"),
    Case("prior_outside_physical_limits", config({"model": {"priors": {"contrast": [0, 2]}}}),
         r"model\.priors\.contrast: expected bounds inside the physical limits"),
    Case("unknown_prior_kind", config({"model": {"priors": {"D0": {"kind": "gaussian"}}}}),
         r"model\.priors\.D0\.kind: expected one of 'uniform', 'truncated_normal', "
         r"'log_uniform', 'log_normal', found 'gaussian'"),
    Case("prior_of_other_physics", config({"model": {"priors": {"gamma_dot_0": [0.1, 0.2]}}}),
         r"model\.priors\.gamma_dot_0: expected a parameter of physics 'static'"),
    Case("unknown_model", config({"model": {"physics": "laminar"}}),
         r"model\.physics: expected one of 'static', 'laminar_flow', 'two_component', "
         r"found 'laminar'"),
    Case("unknown_mode", config({"model": {"per_angle_mode": "fourier"}}),
         r"model\.per_angle_mode: expected one of 'individual', 'auto', 'constant', "
         r"'constant_averaged', found 'fourier'"),
    Case("unknown_backend", config({"backend": {"name": "mpi"}}),
         r"backend\.name: expected one of 'sequential', 'processes', 'jax', 'dask', 'auto', "
         r"found 'mpi'"),
    Case("unknown_backend_option", config({"backend": {"name": "processes", "wrkers": 2}}),
         r"backend\.wrkers: unknown key \(allowed: name, workers, threads_per_worker"),
    Case("option_of_another_backend", config({"backend": {"name": "jax", "queue": "debug"}}),
         r"backend\.queue: unknown key \(allowed: name, devices\)"),
    Case("bad_dask_option_value", config({"backend": {"name": "dask", "cluster": "sge"}}),
         r"backend\.cluster: expected one of 'local', 'pbs', 'slurm', found 'sge'"),
    Case("unknown_combine_method", config({"combine": {"method": "median"}}),
         r"combine\.method: expected one of 'rate_space_consensus', 'consensus', .*found 'median'"),
    Case("unknown_combine_option",
         config({"combine": {"method": "consensus", "options": {"shrink": 0.1}}}),
         r"combine\.options\.shrink: expected an option of method 'consensus' "
         r"\(one of .*shrinkage"),
    Case("value_init_without_warm_start", config({"sampling": {"warm_start": False,
                                                               "init_strategy": "value"}}),
         r"sampling\.init_strategy: expected 'median' or 'sample' without a warm start"),
    Case("target_accept_out_of_range", config({"sampling": {"target_accept_prob": 1.5}}),
         r"sampling\.target_accept_prob: expected a number < 1, found 1\.5"),
    Case("config_end_before_start", config({"data": {"start_frame": 10, "end_frame": 5}}),
         r"data\.end_frame: expected end_frame > start_frame \(10\), found 5"),
    Case("config_duplicate_angles", config({"data": {"phi": [0.0, 45.0, 0.0]}}),
         r"data\.phi: expected distinct angles, found duplicate\(s\) \[0\.0\]"),
    Case("config_dt_not_positive", config({"data": {"dt": 0}}),
         r"data\.dt: expected a number > 0, found 0"),
    Case("config_gap_negative", config({"data": {"gap": -2.0e6}}),
         r"data\.gap: expected a number > 0, found -2000000\.0"),
    Case("config_nan_value", text("data: {file: run.h5, q: .nan}\nmodel: {physics: static}\n"),
         r"data\.q: expected a number > 0, found nan"),
    Case("unknown_extension", data_file("run.txt", garbage),
         r"data\.format: expected 'aps_u', 'aps_old' or 'npz' for 'run\.txt'"),
    Case("yaml_syntax_error", text("data: {file: run.h5\nmodel: [static\n"),
         r"cfg\.yaml: YAML syntax error"),
    Case("non_mapping_yaml", text("- data\n- model\n"),
         r"cfg\.yaml: expected a YAML mapping of sections .*found a list"),
    Case("bad_override_string", config(overrides=["sampling.num_chains"]),
         r"override 'sampling\.num_chains': expected 'section\.key=value'"),
    Case("bad_override_value", config(overrides=["data.phi=[0, 45"]),
         r"override 'data\.phi=\[0, 45': the value is not valid YAML"),
    Case("override_unknown_key", config(overrides=["sampling.num_chainz=2"]),
         r"sampling\.num_chainz: unknown key"),
    Case("override_below_a_value", config(overrides=["data.file.name=x"]),
         r"override 'data\.file\.name=x': data\.file is 'run\.h5', not a section"),
    Case("override_wrong_value", config(overrides=["sharding.num_shards=-1"]),
         r"sharding\.num_shards: expected an integer >= 1, found -1"),
]

DATA_CASES = [
    Case("missing_hdf5_dataset", config(h5=lambda f: f.__delitem__(APS_U_PHI)),
         rf"data\.file: .*run\.h5: dataset '{APS_U_PHI}' is missing"),
    Case("missing_hdf5_group", config({"data": {"format": "aps_u"}},
                                      h5=lambda f: f.__delitem__(APS_U_MAPS)),
         rf"group '{APS_U_MAPS}' is missing"),
    Case("bins_do_not_match_matrices", config(h5=replace_dataset(APS_U_BINS,
                                                                 np.array([1, 2, 3]))),
         rf"'{APS_U_MAPS}' holds 2 matrices but '{APS_U_BINS}' lists 3 bins"),
    Case("nan_in_c2", config(h5=replace_dataset(MAP2, np.full((N_T, N_T), np.nan))),
         rf"dataset '{MAP2}' holds NaN/inf values in frames 1\.\.{N_T}"),
    Case("inf_in_c2", corrupt_with_sim(lambda sim: replace_dataset(
        MAP1, matrix_with(sim, 0, 2, 9, np.inf))), rf"dataset '{MAP1}' holds NaN/inf values"),
    Case("non_square_matrix", config(h5=replace_dataset(MAP2, np.ones((N_T, N_T - 1)))),
         rf"dataset '{MAP2}' has shape \({N_T}, {N_T - 1}\); expected a square"),
    Case("mismatched_matrices", config(h5=replace_dataset(MAP2, np.ones((N_T + 1, N_T + 1)))),
         rf"dataset '{MAP2}' has shape \({N_T + 1}, {N_T + 1}\); expected \({N_T}, {N_T}\)"),
    Case("no_q_within_tolerance", config({"data": {"q": 0.02}}),
         r"q = 0\.02 Å⁻¹ is not present in 'xpcs/qmap/dynamic_v_list_dim0'"),
    Case("angle_not_in_file", config({"data": {"phi": [33.0]}}),
         r"angle 33\.0 deg is not present in 'xpcs/qmap/dynamic_v_list_dim1'"),
    Case("empty_frame_range", config({"data": {"start_frame": N_T}}),
         rf"empty frame range start_frame={N_T}, end_frame={N_T}"),
    Case("end_frame_beyond_frames", config({"data": {"end_frame": N_T + 5}}),
         rf"expected 1 <= start_frame < end_frame <= {N_T}"),
    Case("duplicate_angles_in_file", config(h5=replace_dataset(APS_U_PHI, np.zeros(2))),
         r"XPCSData\.phi: duplicate angle\(s\) \[0\.0\]"),
    Case("known_noise_without_sigma", config({"model": {"noise": "known"}}),
         r"model\.noise: expected 'sampled' for .*run\.h5 \(it holds no sigma array"),
    Case("more_shards_than_rows", config({"sharding": {"num_shards": ROWS + 1}}),
         rf"sharding\.num_shards: expected at most the number of frame rows \({ROWS}\), "
         rf"found {ROWS + 1}"),
    Case("more_shards_than_points", config({"sharding": {"num_shards": POINTS + 1},
                                            "model": {"likelihood": "points"}}),
         rf"sharding\.num_shards: expected at most the number of points \({POINTS}\), "
         rf"found {POINTS + 1}"),
    Case("not_an_hdf5_file", data_file("run.h5", garbage),
         r"data\.file: .*run\.h5: cannot read as HDF5"),
    Case("unknown_hdf5_layout", data_file("run.h5", h5_with({"something": np.ones(3)})),
         r"run\.h5: unknown layout: expected 'xpcs/qmap/dynamic_v_list_dim0'"),
    Case("wrong_npz_keys", npz(lambda s: {}, drop=("q", "phi", "dt", "gap")),
         r"NPZ key\(s\) \['q', 'phi', 'dt', 'gap'\] missing"),
    Case("not_an_npz_file", data_file("run.npz", garbage), r"run\.npz: cannot read as NPZ"),
    Case("npz_dt_not_positive", npz(lambda s: {"dt": 0.0}),
         r"run\.npz: XPCSData\.dt: expected a finite value > 0, found 0\.0"),
    Case("npz_nan_in_c2", npz(nan_c2),
         r"XPCSData\.c2: expected finite values, found 2 non-finite value\(s\), "
         r"first at index \(1, 3, 7\)"),
    Case("npz_mismatched_times", npz(lambda s: {"t": s.t[:-1]}),
         rf"XPCSData\.t: expected {N_T} frame times \(n_t of c2\), found {N_T - 1}"),
    Case("npz_q_mismatch", npz(lambda s: {}, {"data": {"q": 0.01}}),
         r"data\.q: expected the file's q within 10%, found q = 0\.01"),
    Case("npz_known_noise_without_sigma", npz(lambda s: {}, {"model": {"noise": "known"}}),
         r"model\.noise: expected 'sampled'"),
]


if importlib.util.find_spec("shardmc.backends.jobqueue") is not None:  # the dask backend
    CONFIG_CASES.append(Case("dask_batch_job_without_memory", config({"backend": {
        "name": "dask", "cluster": "slurm", "queue": "debug", "interface": "ib0"}}),
        r"backend\.memory: expected the memory of one slurm job"))

CASES = CONFIG_CASES + DATA_CASES


def test_the_suite_has_at_least_30_distinct_cases() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) >= 30
    assert all(c.make is not None for c in CASES)


def test_the_valid_inputs_pass(tmp_path: Path, sim: XPCSData) -> None:
    """The base every case breaks is itself valid (so each case fails for its own reason)."""
    check_run_inputs(config()(tmp_path, sim).config)
    npz_dir = tmp_path / "npz"
    npz_dir.mkdir()
    save_npz(npz_dir / "run.npz", sim)
    check_run_inputs(data_file("run.npz", lambda p, s: None)(npz_dir, sim).config)


def run_cli(config_path: Path, overrides: Sequence[str], out: Path, capsys) -> tuple[int, str]:
    """``shardmc run CONFIG --out OUT --set ...`` in process: (exit code, stderr)."""
    argv = ["run", str(config_path), "--out", str(out), "--no-progress"]
    for override in overrides:
        argv += ["--set", override]
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_naming_the_problem(case: Case, tmp_path: Path,
                                                 sim: XPCSData, capsys) -> None:
    """Through the real command line: exit code 2, one clear message, no traceback, and
    no run directory left behind."""
    invocation = case.make(tmp_path, sim)
    out = tmp_path / "run-out"
    code, message = run_cli(invocation.config, invocation.overrides, out, capsys)
    assert code == EXIT_BAD_INPUT, message
    assert message.startswith("shardmc: error: "), message
    assert re.search(case.message, message), message
    assert "Traceback" not in message
    assert "pydantic" not in message and "errors.pydantic.dev" not in message, message
    assert not out.exists()


def test_library_raises_the_same_errors(tmp_path: Path, sim: XPCSData) -> None:
    """The CLI's checks are the library's: build_run(load_config(...)) raises them too."""
    for case in CASES[:10]:
        folder = tmp_path / case.id
        folder.mkdir()
        invocation = case.make(folder, sim)
        with pytest.raises(ShardMCInputError, match=case.message):
            check_run_inputs(invocation.config, invocation.overrides)


def test_run_directory_that_cannot_be_created_is_refused(tmp_path: Path, sim: XPCSData,
                                                         capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, message = run_cli(config()(tmp_path, sim).config, (), blocker / "run", capsys)
    assert code == EXIT_BAD_INPUT and "not writable" in message, message


def _interrupted_run(tmp_path: Path, sim: XPCSData) -> Path:
    """A run directory as `shardmc run` leaves it when killed before any shard finished."""
    from shardmc.config import config_hash, data_hash, resolved_yaml
    from shardmc.workflow.store import RunStore

    cfg = load_config(config()(tmp_path, sim).config)
    store = RunStore.create(tmp_path / "run")
    (store.path / "config.yaml").write_text(resolved_yaml(cfg))
    store.write_manifest({"config_hash": config_hash(cfg),
                          "data_hash": data_hash(cfg.data.file), "num_shards": 2})
    return store.path


def test_corrupted_shard_file_is_refused_on_resume(tmp_path: Path, sim: XPCSData,
                                                   capsys) -> None:
    run = _interrupted_run(tmp_path, sim)
    (run / "shards" / "shard-00001-of-00002.npz").write_bytes(b"PK\x03\x04 truncated")
    code = main(["resume", str(run), "--no-progress"])
    message = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT, message
    assert "shard-00001-of-00002.npz: corrupted shard file" in message
    assert "Traceback" not in message


def test_changed_data_file_is_refused_on_resume(tmp_path: Path, sim: XPCSData,
                                                capsys) -> None:
    run = _interrupted_run(tmp_path, sim)
    with h5py.File(load_config(run / "config.yaml").data.file, "a") as f:
        f.attrs["touched"] = 1
    code = main(["resume", str(run), "--no-progress"])
    message = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and "data file changed" in message, message


def test_resume_of_a_folder_that_is_not_a_run_is_refused(tmp_path: Path, capsys) -> None:
    code = main(["resume", str(tmp_path), "--no-progress"])
    message = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and "not a shardmc run directory" in message, message
