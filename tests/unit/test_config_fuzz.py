"""Fuzz of the config schema: random mutations of valid config dicts (keys dropped, keys
added, values replaced by random values of any type) give either a valid RunConfig, which
round-trips through resolved_yaml, or a ShardMCInputError, never another exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardmc.config import config_dict, config_from_dict, load_config, resolved_yaml
from shardmc.errors import ShardMCInputError
from shardmc.xpcs import simulate, write_aps_u

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    write_aps_u(folder / "run.h5", simulate("static", n_angles=2, n_t=8, seed=0)[0])
    return folder


@pytest.fixture(scope="module")
def bases(base_dir: Path) -> list[dict[str, Any]]:
    return valid_bases(base_dir)


def valid_bases(base_dir: Path) -> list[dict[str, Any]]:
    """Fully resolved valid configs (every key present) to mutate."""
    common = {"data": {"file": "run.h5", "phi": [0.0, 90.0]},
              "model": {"physics": "laminar_flow", "priors": {"D0": [1e3, 1e5], "alpha": {
                  "kind": "truncated_normal", "loc": 0.0, "scale": 0.5}}},
              "combine": {"options": {"shrinkage": "auto"}}}
    backends = [{"name": "sequential"}, {"name": "processes", "workers": 1},
                {"name": "dask", "adaptive": {"maximum_jobs": 2}, "security": True,
                 "job_script_prologue": ["echo"]}]
    return [config_dict(config_from_dict({**common, "backend": b}, base_dir))
            for b in backends]


def paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested dict (sections and leaves)."""
    out = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.append((*prefix, k))
            out += paths(v, (*prefix, k))
    return out


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["static", "processes", "auto", "value", "consensus", "run.h5", ".nan",
                     "1e3", "", "individual", "pooled"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)
keys = st.one_of(st.text(max_size=10), st.sampled_from(["name", "file", "kind", "lower",
                                                        "workers", "num_shards", "priors"]),
                 st.integers(-2, 2))


def _parent(tree: dict, path: tuple) -> dict | None:
    node: Any = tree
    for k in path[:-1]:
        node = node.get(k) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


@st.composite
def mutated(draw, bases: list[dict[str, Any]]) -> dict[str, Any]:
    tree = yaml.safe_load(yaml.safe_dump(draw(st.sampled_from(bases))))  # deep copy
    for _ in range(draw(st.integers(1, 3))):
        all_paths = paths(tree)
        op = draw(st.sampled_from(["drop", "add", "replace", "replace", "replace"]))
        if op == "add" or not all_paths:
            sections = [()] + [p for p in all_paths if isinstance(_get(tree, p), dict)]
            where = draw(st.sampled_from(sections))
            node = _get(tree, where)
            node[draw(keys)] = draw(values)
            continue
        path = draw(st.sampled_from(all_paths))
        parent = _parent(tree, path)
        if parent is None:
            continue
        if op == "drop":
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(values)
    return tree


def _get(tree: dict, path: tuple) -> Any:
    for k in path:
        tree = tree[k]
    return tree


@SETTINGS
@given(data=st.data())
def test_mutated_configs_validate_or_raise_input_errors(base_dir: Path, bases, data) -> None:
    raw = data.draw(mutated(bases))
    try:
        cfg = config_from_dict(raw, base_dir, source="fuzz.yaml")
    except ShardMCInputError as exc:
        message = str(exc)
        assert message and "pydantic" not in message and "Input should" not in message
        assert all(line.startswith("fuzz.yaml: ") for line in message.splitlines()), message
        return
    again = config_from_dict(yaml.safe_load(resolved_yaml(cfg)), base_dir)
    assert again == cfg


@SETTINGS
@given(override=st.one_of(
    st.text(max_size=30),
    st.builds(lambda k, v: f"{k}={v}",
              st.sampled_from(["sampling.num_chains", "data.phi", "backend.name", "model",
                               "backend.workers", "a..b", "run.seed.x", "combine.options.x"]),
              st.text(max_size=12))))
def test_random_overrides_apply_or_raise_input_errors(base_dir: Path, override: str) -> None:
    path = base_dir / "cfg.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump({"data": {"file": "run.h5"},
                                        "model": {"physics": "static"}}))
    try:
        load_config(path, [override])
    except ShardMCInputError as exc:
        assert str(exc)
