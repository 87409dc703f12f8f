"""Declare ROS parameters from a config dataclass and read them back as that (validated) dataclass.

Every field of the (nested) config becomes a dotted parameter (``execution.n_action_steps``) with
its default and the description from the dataclass docstring, declared up front. YAML files and
``-p`` overrides only change values; an invalid value stops the node with the config's message.
"""
from __future__ import annotations

import dataclasses
import re
import typing

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from policytrim_ros.config import flatten, from_dict, to_dict, unflatten

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


def _fields(cls, prefix: str = ''):
    """(dotted name, annotated type, description) for every leaf field of a nested dataclass."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _fields(tp, f'{prefix}{f.name}.')
        else:
            yield prefix + f.name, tp, docs.get(f.name, '')


def declare_config(node: Node, config_cls, defaults=None):
    """Declare every field of ``config_cls`` as a parameter, then return the validated config.

    ``defaults`` (an instance) overrides the dataclass defaults. Raises ConfigError (a ValueError)
    naming the parameter if a value breaks the config's rules.
    """
    default_values = flatten(to_dict(defaults if defaults is not None else config_cls()))
    values = {}
    for name, tp, doc in _fields(config_cls):
        default = default_values[name]
        if isinstance(default, list) and not default:  # an empty list has no type: name it
            item = (typing.get_args(tp) or (float,))[0]
            node.declare_parameter(name, _ARRAY_TYPES[item], ParameterDescriptor(description=doc))
        else:  # dynamic typing lets YAML write 1 for a float; the dataclass checks the value
            node.declare_parameter(name, default, ParameterDescriptor(description=doc, dynamic_typing=True))
        try:
            value = node.get_parameter(name).value
        except ParameterUninitializedException:
            value = default
        values[name] = list(value) if isinstance(value, (list, tuple)) or hasattr(value, 'tolist') else value
    return from_dict(config_cls, unflatten(values))
