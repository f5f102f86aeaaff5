"""pydantic ValidationError -> one line per error:
``<key.path>: expected <what>, found <input>``."""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from shardmc.errors import ShardMCInputError

#: Longest repr of a found value shown in a message (longer ones are cut with "...").
MAX_FOUND_CHARS = 80

_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "number_type": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "path_type": "a file path (a string)",
    "list_type": "a list", "tuple_type": "a list",
    "dict_type": "a mapping (key: value)", "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
           "less_than_equal": "<="}


def found(value: Any) -> str:
    """repr of a found value, cut to MAX_FOUND_CHARS."""
    text = repr(value)
    return text if len(text) <= MAX_FOUND_CHARS else text[: MAX_FOUND_CHARS - 3] + "..."


def key_text(key: Any) -> str:
    """A key as written in a path; odd ones (empty, spaces, control characters) as repr."""
    text = str(key)
    return text if text and text.isprintable() and text.strip() == text else repr(key)


def unwrap_type(tp: Any) -> Any:
    """Strip Annotated and Optional."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _union_member(members: list[Any], label: Any) -> Any:
    """The union member pydantic labels ``label`` (a tag value or a type name)."""
    for m in members:
        if isinstance(m, type) and issubclass(m, BaseModel):
            tag = m.model_fields.get("name")
            if m.__name__ == label or (tag is not None and get_origin(tag.annotation) is Literal
                                       and label in get_args(tag.annotation)):
                return m
        elif getattr(m, "__name__", None) == label:
            return m
    return None


def clean_location(root: type[BaseModel], loc: tuple) -> tuple[list[str], type | None, Any]:
    """(key path without pydantic's union labels, model class holding the last key, the
    last key's type or None)."""
    tp: Any = root
    path: list[str] = []
    holder: type | None = None
    for item in loc:
        tp = unwrap_type(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            holder = tp
            path.append(key_text(item))
            field = tp.model_fields.get(item) if isinstance(item, str) else None
            tp = field.annotation if field is not None else None
        elif origin in (Union, types.UnionType):
            members = [unwrap_type(a) for a in get_args(tp) if a is not type(None)]
            tp = _union_member(members, item)  # a label, not a key
        elif origin is dict:
            path.append(key_text(item))
            tp, holder = get_args(tp)[1], None
        elif origin is list:
            path[-1:] = [f"{path[-1]}[{item}]" if path else f"[{item}]"]
            tp, holder = get_args(tp)[0], None
        else:
            path.append(key_text(item))
            tp, holder = None, None
    return path, holder, unwrap_type(tp)


def expected_phrase(err: dict[str, Any], leaf: Any) -> str:
    """What a pydantic error says was expected, in words (leaf: the field's type)."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        integer = leaf is int
        return f"{'an integer' if integer else 'a number'} {_BOUNDS[kind]} {bound}"
    if kind == "literal_error":
        choices = str(ctx.get("expected", ""))
        head, _, last = choices.rpartition(" or ")
        return f"one of {head}, {last}" if head else f"{choices}"
    if kind == "too_short":
        return f"a list of at least {ctx.get('min_length')} item(s)"
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind]
    return err.get("msg", kind).replace("Input should be ", "").replace("Value error, ", "")


def _line(root: type[BaseModel], err: dict[str, Any]) -> tuple[str, str, str]:
    """(key path, what was expected or the whole message, found) of one pydantic error."""
    path, holder, leaf = clean_location(root, err["loc"])
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "shardmc_config":
        key = ".".join([*path, ctx["key"]] if ctx.get("key") else path)
        return key, ctx["message"], ""
    if kind == "union_tag_invalid":
        return ".".join([*path, "name"]), f"one of {ctx.get('expected_tags')}", \
            found(ctx.get("tag"))
    if kind == "union_tag_not_found":
        return ".".join([*path, "name"]), "required key missing", ""
    key = ".".join(path) or "(top level)"
    if kind == "missing":
        return key, "required key missing", ""
    if kind == "extra_forbidden":
        allowed = ", ".join(holder.model_fields) if holder is not None else "?"
        return key, f"unknown key (allowed: {allowed})", ""
    return key, expected_phrase(err, leaf), found(err.get("input"))


def format_validation_error(exc: ValidationError, root: type[BaseModel],
                            source: str | None = None) -> ShardMCInputError:
    """One line per error (errors at one key from the members of a union are merged)."""
    merged: dict[tuple[str, str], list[str]] = {}
    for err in exc.errors():
        key, what, value = _line(root, err)
        bucket = merged.setdefault((key, value), [])
        if what not in bucket:
            bucket.append(what)
    prefix = f"{source}: " if source else ""
    lines = []
    for (key, value), whats in merged.items():
        what = " or ".join(whats)
        if not value or what.startswith("expected"):
            lines.append(f"{prefix}{key}: {what}")
        else:
            lines.append(f"{prefix}{key}: expected {what}, found {value}")
    return ShardMCInputError("\n".join(lines))
