"""Commented YAML templates of a run config (``shardmc config --template <physics>``).

Every key is written with its default and the field's description from the schema, so
the template and the schema cannot drift apart.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel

from shardmc.config.backends import (
    AutoBackendConfig,
    DaskBackendConfig,
    ProcessesBackendConfig,
)
from shardmc.config.errors import unwrap_type
from shardmc.config.schema import (
    CombineConfig,
    DataConfig,
    ModelConfig,
    RunSection,
    SamplingConfig,
    ShardingConfig,
)
from shardmc.xpcs.physics import DEFAULT_DT, DEFAULT_GAP, PHYSICS_MODELS

#: Placeholder data file of a template (point it to a real file).
TEMPLATE_DATA_FILE = "run.h5"
#: Per-physics values a template writes instead of the schema defaults. Unmeasured for
#: two_component: more parameters (14 + per-angle) get a longer warmup.
TEMPLATE_VALUES: dict[str, dict[str, dict[str, Any]]] = {
    "static": {},
    "laminar_flow": {},
    "two_component": {"sampling": {"num_warmup": 400}},
}
#: Comment column of a template line.
COMMENT_COLUMN = 34


def yaml_value(value: Any) -> str:
    """A value as inline YAML that yaml.safe_load reads back (floats keep a '.')."""
    if isinstance(value, float) and math.isfinite(value):
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _choices(annotation: Any) -> tuple[str, ...]:
    tp = unwrap_type(annotation)
    return tuple(get_args(tp)) if get_origin(tp) is Literal else ()


def _comment(field: Any) -> str:
    text = field.description or ""
    choices = _choices(field.annotation)
    if choices and " | " not in text:
        text += f" [{' | '.join(map(str, choices))}]"
    return text


def _line(indent: str, key: str, value: Any, comment: str) -> str:
    head = f"{indent}{key}: {yaml_value(value)}"
    return f"{head:<{COMMENT_COLUMN}}  # {comment}" if comment else head


def _field_default(model: type[BaseModel], name: str) -> Any:
    field = model.model_fields[name]
    return field.get_default(call_default_factory=True)


def section_lines(model: type[BaseModel], values: dict[str, Any], indent: str = "  ",
                  commented: bool = False, skip: tuple[str, ...] = ()) -> list[str]:
    """One commented line per field of ``model``; ``values`` replace the defaults."""
    lines = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        value = values.get(name, _field_default(model, name))
        line = _line(indent, name, value, _comment(field))
        lines.append(f"{indent}# {line.strip()}" if commented else line)
    return lines


def _priors_comment(physics: str) -> list[str]:
    from shardmc.xpcs import describe

    table = describe(physics).splitlines()
    return ["  # parameters you may override (bounds are the default prior's):",
            *(f"  #   {row}" for row in table),
            "  # e.g.  priors:",
            "  #         D0: {kind: log_uniform, lower: 1.0e+3, upper: 1.0e+5}",
            "  #         alpha: [-1.5, 0.5]          # [lower, upper], kind kept",
            "  #         offset: {kind: truncated_normal, lower: 0.9, upper: 1.1, loc: 1.0,"
            " scale: 0.02}"]


def template(physics: str) -> str:
    """A commented YAML run config for ``physics`` (static | laminar_flow | two_component)."""
    if physics not in PHYSICS_MODELS:
        from shardmc.errors import ShardMCInputError

        raise ShardMCInputError(f"--template: expected one of {', '.join(PHYSICS_MODELS)}, "
                                f"found {physics!r}")
    extra = TEMPLATE_VALUES[physics]
    out = [f"# shardmc run configuration: {physics} (template)",
           "# Run: shardmc run this.yaml   Override a key: --set sampling.num_chains=2",
           "# Unknown keys and bad values are errors naming the key. Units: q Å⁻¹, angles",
           "# degrees, times s, gap Å. Point data.file to your data file first.", ""]
    data_values = {"file": TEMPLATE_DATA_FILE, "dt": DEFAULT_DT, "gap": DEFAULT_GAP,
                   **extra.get("data", {})}
    sections: list[tuple[str, type[BaseModel], dict[str, Any]]] = [
        ("data", DataConfig, data_values),
        ("model", ModelConfig, {"physics": physics, **extra.get("model", {})}),
        ("sharding", ShardingConfig, extra.get("sharding", {})),
        ("sampling", SamplingConfig, {"init_strategy": "value", **extra.get("sampling", {})}),
        ("combine", CombineConfig, extra.get("combine", {})),
    ]
    for name, model, values in sections:
        out.append(f"{name}:")
        out += section_lines(model, values)
        if name == "model":
            out += _priors_comment(physics)
        out.append("")
    out.append("backend:")
    out += section_lines(AutoBackendConfig, {})
    out.append("  # name: processes takes (defaults shown):")
    out += section_lines(ProcessesBackendConfig, {}, commented=True, skip=("name",))
    out.append("  # name: dask takes (null: the backend's default):")
    out += section_lines(DaskBackendConfig, {}, commented=True, skip=("name",))
    out.append("  # name: jax takes devices (null: all); name: sequential takes nothing")
    out.append("")
    out.append("run:")
    out += section_lines(RunSection, {})
    return "\n".join(out) + "\n"
