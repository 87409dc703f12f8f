"""Typed configuration: frozen dataclasses built from (nested) dicts and YAML.

Every component owns one frozen dataclass whose ``__post_init__`` validates its fields. This module
turns plain dicts (YAML, ROS parameters) into those dataclasses, rejecting unknown keys with a
"did you mean" hint, and flattens them back into dotted names (``execution.n_action_steps``) for ROS
parameter declaration.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar('T')


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key and the rule."""


def check_seconds(config, *names: str, zero: bool = False) -> None:
    """ValueError naming the field and the rule unless each of ``config``'s fields ``names`` is a
    finite number of seconds > 0 (>= 0 with ``zero``)."""
    for name in names:
        value = getattr(config, name)
        if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
            raise ValueError(f"{name} ({value}) must be {'>=' if zero else '>'} 0 seconds")


IMPORT_SPEC = re.compile(r'^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$')
"""'package.module:Class': a class named by configuration (a plug-in), imported only when used."""


def import_object(spec: str, key: str):
    """The object ``spec`` ('package.module:Name') names; ConfigError naming ``key`` (the config
    field that holds it) if its module cannot be imported or has no such name."""
    module_name, _, attribute = spec.partition(':')
    try:
        target = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{key} '{spec}': cannot import {module_name}: {err} (is it on PYTHONPATH?)") from None
    for part in attribute.split('.'):
        if not hasattr(target, part):
            names = [n for n in dir(target) if not n.startswith('_')]
            raise ConfigError(f"{key} '{spec}': {module_name} has no '{attribute}'{suggest(part, names)}")
        target = getattr(target, part)
    return target


def suggest(name: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ''


def close_matches(name: str, choices, n: int = 3) -> list[str]:
    """Up to ``n`` choices closest to ``name``, closest first (difflib's ratio >= 0.6); [] if none."""
    return difflib.get_close_matches(name, list(choices), n=n)


def check_node_name(name: str) -> None:
    """Raise ValueError unless ``name`` is a ROS node name, relative or absolute ('arm_controller',
    '/arm1/arm_controller')."""
    if not name or not all(part.isidentifier() for part in name.strip('/').split('/')):
        raise ValueError(f"name '{name}' must be a ROS node name (letters, digits, _ and / between)")


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Coerce a YAML/ROS value into the annotated field type (tuples, mappings, nested dataclasses)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f'{key} must be a mapping, got {value!r}')
        return from_dict(tp, value, prefix=key + '.')
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f'{key} must be a list, got {value!r}')
        args = typing.get_args(tp)
        item = args[0] if args else Any
        if dataclasses.is_dataclass(item):   # entries name themselves: 'rollouts.robots[1].resource'
            return tuple(_convert(v, item, f'{key}[{i}]') for i, v in enumerate(value))
        return tuple(_convert(v, item, key) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f'{key} must be a mapping, got {value!r}')
        key_type, value_type = typing.get_args(tp) or (Any, Any)
        return {_convert(k, key_type, key): _convert(v, value_type, f'{key}.{k}') for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is not bool and isinstance(value, bool))):
        raise ConfigError(f'{key} must be {tp.__name__}, got {value!r}')  # bool is an int in Python: not here
    return value


def from_dict(cls: type[T], values: dict[str, Any], prefix: str = '') -> T:
    """Build dataclass ``cls`` from a nested dict; unknown keys raise ConfigError with a hint."""
    if values is None:
        values = {}
    types = _field_types(cls)
    unknown = [k for k in values if k not in types]
    if unknown:
        k = unknown[0]
        raise ConfigError(f"unknown config key '{prefix}{k}'{suggest(k, types)}; "
                          f"valid keys: {', '.join(prefix + t for t in types)}")
    kwargs = {k: _convert(v, types[k], prefix + k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as err:  # __post_init__ rules
        raise ConfigError(f'{prefix}{err}' if prefix and not str(err).startswith(prefix) else str(err)) from None


def to_dict(config) -> dict[str, Any]:
    """Nested plain dict of a config dataclass (tuples become lists, for YAML/JSON)."""
    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(config))


def flatten(values: dict[str, Any], prefix: str = '') -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1} (ROS parameter names)."""
    flat = {}
    for k, v in values.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f'{prefix}{k}.'))
        else:
            flat[prefix + k] = v
    return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}}."""
    nested: dict[str, Any] = {}
    for key, v in flat.items():
        node = nested
        *parents, leaf = key.split('.')
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return nested


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a clear error if the file is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f'config file not found: {path}')
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f'{path} must hold a mapping at the top level')
    return data


def ros_parameters(data: dict[str, Any], node_name: str) -> dict[str, Any]:
    """The nested ``ros__parameters`` of ``node_name`` (or ``/**``) in a ROS params YAML."""
    merged: dict[str, Any] = {}
    for key in ('/**', node_name, '/' + node_name):
        section = data.get(key)
        if section is not None:
            merged.update(flatten(section.get('ros__parameters', {})))
    return unflatten(merged)
