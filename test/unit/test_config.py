import pytest

from policytrim_ros.config import ConfigError, flatten, from_dict, ros_parameters, unflatten
from policytrim_ros.execution.config import SafetyConfig
from policytrim_ros.nodes.params import field_docs
from policytrim_ros.nodes.policy_config import PolicyNodeConfig
from policytrim_ros.policy.factory import PolicyConfig


def test_nested_dicts_build_typed_configs():
    cfg = from_dict(PolicyNodeConfig, {'execution': {'n_action_steps': 8, 'control_dt': 1},
                                       'safety': {'max_velocity': [1, 2, 3, 4, 5, 6, 7]}})
    assert cfg.execution.n_action_steps == 8 and cfg.execution.control_dt == 1.0
    assert isinstance(cfg.execution.control_dt, float)
    assert cfg.safety.max_velocity == (1, 2, 3, 4, 5, 6, 7)


def test_unknown_key_suggests_the_closest_one():
    with pytest.raises(ConfigError, match=r"unknown config key 'execution.n_action_step' \(did you mean "
                                          r"'n_action_steps'\?\)"):
        from_dict(PolicyNodeConfig, {'execution': {'n_action_step': 8}})


def test_rule_violations_name_the_field_and_value():
    with pytest.raises(ConfigError, match=r'n_action_steps \(24\) must be in \[1, chunk_size \(16\)\]'):
        from_dict(PolicyNodeConfig, {'execution': {'n_action_steps': 24}})
    with pytest.raises(ValueError, match="backend 'expret' is not one of .*did you mean 'expert'"):
        PolicyConfig(backend='expret')


def test_wrong_types_are_reported():
    with pytest.raises(ConfigError, match=r'execution.chunk_size must be int'):
        from_dict(PolicyNodeConfig, {'execution': {'chunk_size': 'big'}})
    with pytest.raises(ConfigError, match='robot.joint_names must be a list'):
        from_dict(PolicyNodeConfig, {'robot': {'joint_names': 'joint1'}})


def test_safety_limits_must_pair_up():
    with pytest.raises(ValueError, match='position_lower'):
        SafetyConfig(position_lower=(0.0,), position_upper=())


def test_flatten_round_trip_and_ros_parameter_sections():
    nested = {'a': {'b': 1, 'c': {'d': [1, 2]}}, 'e': 'x'}
    assert flatten(nested) == {'a.b': 1, 'a.c.d': [1, 2], 'e': 'x'}
    assert unflatten(flatten(nested)) == nested
    data = {'/**': {'ros__parameters': {'x': {'y': 1}}}, 'policy_node': {'ros__parameters': {'x': {'z': 2}}}}
    assert ros_parameters(data, 'policy_node') == {'x': {'y': 1, 'z': 2}}


def test_parameter_descriptions_come_from_the_dataclass_docstrings():
    docs = field_docs(SafetyConfig)
    assert docs['position_lower'] == docs['position_upper']
    assert 'including the jump from the measured position' in docs['max_velocity']
