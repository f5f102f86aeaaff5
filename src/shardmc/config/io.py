"""Reading a run config (YAML, ``yaml.safe_load`` only), CLI overrides, the resolved form."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shardmc.config.errors import format_validation_error
from shardmc.config.schema import RunConfig
from shardmc.errors import ShardMCInputError

#: A key path of an override: dotted identifiers, e.g. ``sampling.num_chains``.
OVERRIDE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
#: Header of the resolved config a run directory stores.
RESOLVED_HEADER = "# shardmc run configuration, every default filled in (resolved_yaml)\n"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], yaml.safe_load(value)); ShardMCInputError if malformed."""
    key, sep, raw = str(text).partition("=")
    key = key.strip()
    if not sep or not OVERRIDE_KEY.match(key):
        raise ShardMCInputError(f"override {text!r}: expected 'section.key=value' (e.g. "
                                "'sampling.num_chains=2'), found no valid 'key=' part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ShardMCInputError(f"override {text!r}: the value is not valid YAML "
                                f"({_first_line(exc)})") from None
    return key.split("."), value


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``key.path=value`` set (intermediate sections created)."""
    out = _copy_tree(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise ShardMCInputError(f"override {text!r}: {where} is {child!r}, not a "
                                        "section; expected a path to a key")
            node = child
        node[keys[-1]] = value
    return out


def _copy_tree(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy_tree(v) if isinstance(v, Mapping) else v for k, v in raw.items()}


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def config_from_dict(d: Mapping[str, Any], base_dir: Path | None = None, *,
                     source: str | None = None) -> RunConfig:
    """Validate a config mapping; relative ``data.file`` resolves against ``base_dir``.

    source: the config file's name, prefixed to every error line.
    """
    prefix = f"{source}: " if source else ""
    if not isinstance(d, Mapping):
        raise ShardMCInputError(f"{prefix}configuration: expected a mapping of sections "
                                f"(data:, model:, ...), found {type(d).__name__}")
    try:
        return RunConfig.model_validate(dict(d), context={"base_dir": base_dir})
    except ValidationError as exc:
        raise format_validation_error(exc, RunConfig, source) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in ``path`` (``yaml.safe_load``); ShardMCInputError otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ShardMCInputError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ShardMCInputError(f"{path}: cannot read the config file ({exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ShardMCInputError(f"{path}: YAML syntax error: {_first_line(exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ShardMCInputError(f"{path}: expected a YAML mapping of sections (data:, "
                                f"model:, ...), found a {type(raw).__name__}")
    return raw


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read, override (``"section.key=value"``, value parsed as YAML) and validate a config."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        raw = apply_overrides(raw, overrides)
    except ShardMCInputError as exc:
        raise ShardMCInputError(f"{path}: {exc}") from None
    return config_from_dict(raw, path.parent.absolute(), source=str(path))


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    """Every key with its value (defaults filled in), JSON types only."""
    return cfg.model_dump(mode="json")


def resolved_yaml(cfg: RunConfig) -> str:
    """The full config as YAML (what a run directory stores); loads back to an equal config."""
    return RESOLVED_HEADER + yaml.safe_dump(config_dict(cfg), sort_keys=False,
                                            allow_unicode=True)


def config_hash(cfg: RunConfig) -> str:
    """sha256 (hex) of the canonical JSON form (sorted keys, no spaces)."""
    text = json.dumps(config_dict(cfg), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()
