"""Configs are dataclasses; YAML files and `key=value` overrides are validated against them.

An unknown key is an error naming the closest valid key. A bare key is accepted for its dotted path when
exactly one path ends with it (`epochs=1` means `train.epochs=1`). Values are parsed as YAML scalars or
lists and checked against the field's annotated type.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from difflib import get_close_matches
from typing import Any, Literal

import yaml

from loopctr.errors import UserError


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def dotted_paths(obj) -> dict[str, tuple[Any, str, Any]]:
    """'section.key' -> (owning dataclass instance, attribute, annotated type), for every leaf field."""
    out = {}
    hints = _field_types(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            for sub, leaf in dotted_paths(value).items():
                out[f"{f.name}.{sub}"] = leaf
        else:
            out[f.name] = (obj, f.name, hints[f.name])
    return out


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value, tp, key: str):
    """Check `value` against the annotated type `tp` (int, float, bool, str, lists, Optional, Literal)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if len(errors) == 1 else f"{key}: {value!r} does not fit {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise UserError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and origin is list and args:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [coerce(v, inner, key) for v in value] if inner is not Any else list(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise UserError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            return str(value)
        return value
    return value


def resolve_key(key: str, paths: dict, where: str) -> str:
    if key in paths:
        return key
    matches = [p for p in paths if p.endswith("." + key)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UserError(f"{where}: '{key}' is ambiguous; use one of {sorted(matches)}")
    leaf_names = sorted(set(paths) | {p.rsplit(".", 1)[-1] for p in paths})
    close = get_close_matches(key, leaf_names, n=1, cutoff=0.5)
    if close:
        hint = f"did you mean '{close[0]}'?"
    else:
        hint = f"valid keys: {', '.join(sorted(paths))}"
    raise UserError(f"{where}: unknown key '{key}'; {hint}")


def parse_override(text: str, where: str) -> tuple[str, Any]:
    if "=" not in text:
        raise UserError(f"{where}: expected key=value, got '{text}'")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_values(obj, values: dict[str, Any], where: str):
    """Set dotted or bare keys on a (nested) dataclass instance, in place, with validation."""
    paths = dotted_paths(obj)
    for key, value in values.items():
        path = resolve_key(key, paths, where)
        owner, attr, tp = paths[path]
        setattr(owner, attr, coerce(value, tp, path))
    validate_all(obj)
    return obj


def validate_all(obj) -> None:
    """Call `validate()` on every dataclass in the tree that defines one (cross-field checks)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            validate_all(value)
    check = getattr(obj, "validate", None)
    if callable(check):
        check()


def apply_overrides(obj, overrides: list[str], where: str = "config"):
    """Apply `key=value` strings to a copy of a dataclass instance."""
    obj = _deepcopy(obj)
    return set_values(obj, dict(parse_override(o, where) for o in overrides), where)


def flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1}} -> {'train.lr': 1}; lists and scalars are leaves."""
    out = {}
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_yaml(path, what: str = "config file") -> dict:
    """A YAML file whose top level is a mapping; a missing file or bad YAML is a UserError naming the file."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def _deepcopy(obj):
    import copy

    return copy.deepcopy(obj)
