"""Declare ROS parameters from a config dataclass and read them back as that (validated) dataclass.

Every field of the (nested) config becomes a dotted, read-only parameter (``execution.n_action_steps``)
with its default and the description from the dataclass docstring, declared up front. YAML files and
``-p`` overrides only change values; an invalid value, or a key the config does not have (a
misspelling in a params file or on the command line), stops the node with a message naming it.
Read-only: the nodes read their configuration once, so ``ros2 param set`` is refused instead of
answering "successful" and changing nothing; restart the node with the new value.
"""
from __future__ import annotations

import dataclasses
import re
import typing

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from policytrim_ros.config import ConfigError, flatten, from_dict, suggest, to_dict, unflatten

RCLPY_PARAMETERS = ('use_sim_time', 'start_type_description_service')
"""Parameters rclpy declares itself on every node (the second from Jazzy on)."""

_ARRAY_TYPES = {float: Parameter.Type.DOUBLE_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
                str: Parameter.Type.STRING_ARRAY, bool: Parameter.Type.BOOL_ARRAY}


def field_docs(cls) -> dict[str, str]:
    """Field descriptions from a dataclass docstring's ``name[, name2]: text`` lines."""
    docs: dict[str, str] = {}
    names: list[str] = []
    for line in (cls.__doc__ or '').splitlines():
        m = re.match(r'^\s*(\w+(?:, \w+)*): (.+)$', line)
        if m:
            names = m.group(1).split(', ')
            for n in names:
                docs[n] = m.group(2).strip()
        elif names and line.strip() and line.startswith(' ' * 8):
            for n in names:
                docs[n] += ' ' + line.strip()
        else:
            names = []
    return docs


def config_fields(cls, prefix: str = ''):
    """(dotted name, annotated type, description) for every leaf field of a nested dataclass."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from config_fields(tp, f'{prefix}{f.name}.')
        else:
            yield prefix + f.name, tp, docs.get(f.name, '')


def declare_config(node: Node, config_cls, defaults=None):
    """Declare every field of ``config_cls`` as a parameter, then return the validated config.

    ``defaults`` (an instance) overrides the dataclass defaults. Raises ConfigError (a ValueError)
    naming the parameter if a value breaks the config's rules.
    """
    default_values = flatten(to_dict(defaults if defaults is not None else config_cls()))
    values = {}
    for name, tp, doc in config_fields(config_cls):
        default = default_values[name]
        if isinstance(default, list) and not default:  # an empty list has no type: name it
            item = (typing.get_args(tp) or (float,))[0]
            node.declare_parameter(name, _ARRAY_TYPES[item], ParameterDescriptor(description=doc, read_only=True))
        else:  # dynamic typing lets YAML write 1 for a float; the dataclass checks the value
            node.declare_parameter(name, default, ParameterDescriptor(description=doc, dynamic_typing=True,
                                                                      read_only=True))
        try:
            value = node.get_parameter(name).value
        except ParameterUninitializedException:
            value = default
        values[name] = list(value) if isinstance(value, (list, tuple)) or hasattr(value, 'tolist') else value
    reject_unknown_overrides(node, f'{node.get_name()}')
    return from_dict(config_cls, unflatten(values))


def reject_unknown_overrides(node: Node, what: str) -> None:
    """Raise ConfigError if a params file or ``-p`` gave this node a parameter it never declared.

    rclpy keeps such values aside and ignores them, so ``safty.max_velocity`` would silently mean
    no velocity limit at all. Call after declaring every parameter. The overrides are read from
    ``Node._parameter_overrides`` (the same attribute from Humble to Rolling; rclpy has no public
    accessor for the values given to a node that it has not declared).
    """
    overrides = getattr(node, '_parameter_overrides', {})
    declared = set(node.get_parameters_by_prefix('')) | set(RCLPY_PARAMETERS)
    unknown = sorted(name for name in overrides
                     if name not in declared and not name.startswith('qos_overrides.'))
    if unknown:
        key = unknown[0]
        raise ConfigError(f"unknown parameter '{key}' for {what}{suggest(key, sorted(declared))}; "
                          f'it would be ignored. Valid parameters: ros2 param list /{node.get_name()}, '
                          'or the config dataclasses' + (f' (also unknown: {unknown[1:]})' if unknown[1:] else ''))
