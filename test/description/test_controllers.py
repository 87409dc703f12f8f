"""config/controllers.yaml against the URDF's <ros2_control> block and against the parameter schema
of the real joint_trajectory_controller of each target distro (vendored in jtc_schema/, with the
commit each comes from). Each check also runs on a broken copy and must reject it.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from description_support import CONTROLLERS, MOCK, PLUGINS, REPO

SCHEMAS = Path(__file__).parent / 'jtc_schema'
DISTROS = ('humble', 'jazzy', 'kilted')
CONTROLLER_TYPES = {
    'joint_trajectory_controller/JointTrajectoryController',
    'joint_state_broadcaster/JointStateBroadcaster',
}
"""Plugin names the controller_manager loads, from ros2_controllers' joint_trajectory_plugin.xml and
joint_state_plugin.xml (the same on the humble, jazzy and kilted branches of
github.com/ros-controls/ros2_controllers, commits as in jtc_schema/)."""
PYTHON_TYPES = {'bool': bool, 'double': (int, float), 'int': int, 'string': str,
                'string_array': list, 'double_array': list, 'bool_array': list, 'int_array': list}


def ros2_control_joints(urdf: Path) -> dict[str, dict[str, list[str]]]:
    """{joint: {'command': [interfaces], 'state': [interfaces]}} of the URDF's <ros2_control> block."""
    block = ET.parse(urdf).getroot().find('ros2_control')
    return {j.get('name'): {'command': [c.get('name') for c in j.findall('command_interface')],
                            'state': [s.get('name') for s in j.findall('state_interface')]}
            for j in block.findall('joint')}


def controller_problems(controllers: dict, urdf: Path) -> list[str]:
    """Where arm_controller's joints and interfaces do not fit the URDF and its <ros2_control> block."""
    joints = {j.get('name'): j for j in ET.parse(urdf).getroot().findall('joint')}
    hardware = ros2_control_joints(urdf)
    arm = controllers['arm_controller']['ros__parameters']
    problems = []
    for name, interfaces in hardware.items():
        if name not in joints or joints[name].get('type') == 'fixed':
            problems.append(f'<ros2_control> joint {name} is not a moving joint of the URDF')
        elif interfaces['command'] and joints[name].find('mimic') is not None:
            problems.append(f'{name} mimics {joints[name].find("mimic").get("joint")}: it takes no command')
    commanded = [name for name, interfaces in hardware.items() if interfaces['command']]
    if sorted(arm['joints']) != sorted(commanded):
        problems.append(f"arm_controller joints {arm['joints']} != the commanded <ros2_control> joints {commanded}")
    for name in arm['joints']:
        for kind in ('command', 'state'):
            missing = set(arm[f'{kind}_interfaces']) - set(hardware.get(name, {}).get(kind, []))
            if missing:
                problems.append(f'{name} has no {kind} interface {sorted(missing)}')
    return problems


def schema_problems(parameters: dict, schema: dict, joints: list[str]) -> list[str]:
    """Where the controller's ros__parameters do not fit a generate_parameter_library schema: unknown
    keys, wrong types, values outside subset_of/one_of/gt_eq. ``__map_joints`` stands for each joint."""
    problems = []

    def walk(values: dict, spec: dict, path: str):
        for key, value in values.items():
            where = f'{path}{key}'
            entry = spec.get(key)
            if entry is None and key in joints and '__map_joints' in spec:
                entry = spec['__map_joints']
            if not isinstance(entry, dict):
                problems.append(f'{where} is not a parameter')
            elif 'type' not in entry:
                if not isinstance(value, dict):
                    problems.append(f'{where} is a group of parameters, not a value')
                else:
                    walk(value, entry, where + '.')
            elif (not isinstance(value, PYTHON_TYPES[entry['type']])
                  or (entry['type'] == 'double' and isinstance(value, bool))):
                problems.append(f"{where} must be a {entry['type']}, not {value!r}")
            else:
                rules = entry.get('validation') or {}
                allowed = rules.get('subset_of<>') or rules.get('one_of<>')
                if allowed and not set(value if isinstance(value, list) else [value]) <= set(allowed[0]):
                    problems.append(f'{where} {value!r} is not among {allowed[0]}')
                bound = rules.get('gt_eq<>', rules.get('gt_eq'))
                if bound is not None and value < (bound[0] if isinstance(bound, list) else bound):
                    problems.append(f'{where} {value!r} is below {bound}')
    walk(parameters, schema, '')
    return problems


def load_schema(distro: str) -> dict:
    return yaml.safe_load((SCHEMAS / f'{distro}.yaml').read_text())['joint_trajectory_controller']


@pytest.fixture(scope='module')
def controllers() -> dict:
    return yaml.safe_load(CONTROLLERS.read_text())


@pytest.mark.parametrize('plugin', PLUGINS)
def test_controllers_fit_the_ros2_control_block(urdf_files, controllers, plugin):
    assert controller_problems(controllers, urdf_files[plugin]) == []


def test_controller_check_rejects_a_wrong_joint_name(urdf_files, controllers):
    arm = controllers['arm_controller']['ros__parameters']
    broken = {'arm_controller': {'ros__parameters': {**arm, 'joints': ['joint7' if j == 'joint6' else j
                                                                         for j in arm['joints']]}}}
    problems = controller_problems(broken, urdf_files[MOCK])
    assert any('joint7 has no command interface' in p for p in problems), problems


def test_controller_check_rejects_an_interface_the_hardware_lacks(urdf_files, controllers):
    arm = controllers['arm_controller']['ros__parameters']
    broken = {'arm_controller': {'ros__parameters': {**arm, 'command_interfaces': ['velocity']}}}
    problems = controller_problems(broken, urdf_files[MOCK])
    assert "joint1 has no command interface ['velocity']" in problems, problems


def test_controller_manager_section_names_the_real_plugins(controllers):
    manager = controllers['controller_manager']['ros__parameters']
    assert isinstance(manager['update_rate'], int) and manager['update_rate'] > 0
    declared = {name: section['type'] for name, section in manager.items() if isinstance(section, dict)}
    assert set(declared) == {'joint_state_broadcaster', 'arm_controller'}
    assert set(declared.values()) <= CONTROLLER_TYPES
    assert declared['arm_controller'] == 'joint_trajectory_controller/JointTrajectoryController'


@pytest.mark.parametrize('distro', DISTROS)
def test_arm_controller_parameters_exist_in_the_jtc_schema(controllers, distro):
    arm = controllers['arm_controller']['ros__parameters']
    assert schema_problems(arm, load_schema(distro), arm['joints']) == []


def test_schema_check_rejects_a_parameter_kilted_removed(controllers):
    """open_loop_control exists up to Jazzy; Kilted's controller does not know it."""
    arm = {**controllers['arm_controller']['ros__parameters'], 'open_loop_control': True}
    assert schema_problems(arm, load_schema('jazzy'), arm['joints']) == []
    assert schema_problems(arm, load_schema('kilted'), arm['joints']) == ['open_loop_control is not a parameter']


def test_schema_check_rejects_a_misspelt_key_a_wrong_type_and_a_bad_value(controllers):
    arm = controllers['arm_controller']['ros__parameters']
    broken = {**arm, 'allow_nonzero_velocity_at_trajectory_ends': True, 'state_interfaces': ['position', 'effort'],
              'constraints': {**arm['constraints'], 'goal_time': 'soon', 'joint1': {'goal': 0.01, 'tolerance': 1}}}
    assert sorted(schema_problems(broken, load_schema('jazzy'), arm['joints'])) == [
        'allow_nonzero_velocity_at_trajectory_ends is not a parameter',
        "constraints.goal_time must be a double, not 'soon'",
        'constraints.joint1.tolerance is not a parameter',
        "state_interfaces ['position', 'effort'] is not among ['position', 'velocity', 'acceleration']",
    ]


def test_the_policy_configs_command_the_controllers_joints(controllers):
    """Every policy_node config that drives a ros2_control arm names arm_controller's joints."""
    joints = controllers['arm_controller']['ros__parameters']['joints']
    for config in ('deploy.yaml', 'gazebo.yaml'):
        policy = yaml.safe_load((REPO / 'config' / config).read_text())['policy_node']['ros__parameters']
        assert policy['robot']['joint_names'] == joints, config
        assert policy['controller']['name'].strip('/') == 'arm_controller', config
