"""The joint_trajectory_controller rules, per distro, and the shipped controllers.yaml.

The expected verdicts are the real controller's (ros2_controllers' validate_trajectory_msg on the
humble, jazzy and kilted branches; ../shared/notes/real-controller-rules.md).
"""
from pathlib import Path

import numpy as np
import pytest
import yaml
from trajectory_msgs.msg import JointTrajectory

from policytrim_ros.execution import jtc
from policytrim_ros.nodes.conversions import to_duration, to_time, trajectory_to_msg
from policytrim_ros.robots.arm import JOINT_NAMES
from policytrim_ros.trajectory import TrajectoryError, hold_trajectory, window_trajectory

REPO = Path(__file__).resolve().parents[2]
CHUNK = np.linspace(0.0, 0.3, 8)[:, None] * np.ones(len(JOINT_NAMES))   # moving: last velocity != 0


def rules(distro, **parameters):
    return jtc.ControllerRules.for_distro(distro, JOINT_NAMES, **parameters)


def window(window_end='moving', start_time=None):
    return trajectory_to_msg(window_trajectory(CHUNK, 4, 0.1, JOINT_NAMES, start_time, window_end))


@pytest.mark.parametrize('distro, accepted', [('humble', True), ('jazzy', False), ('kilted', False)])
def test_a_window_that_ends_moving_needs_the_controller_to_allow_it(distro, accepted):
    reason = jtc.rejection(window(), rules(distro))
    assert (reason is None) == accepted
    if not accepted:
        assert reason.startswith('Velocity of last trajectory point of joint joint1 is not zero')
    assert jtc.rejection(window(), rules(distro, allow_nonzero_velocity_at_trajectory_end=True)) is None


@pytest.mark.parametrize('distro', jtc.DISTROS)
def test_every_distro_accepts_windows_at_rest_and_the_one_point_hold_and_rejects_an_empty_hold(distro):
    at_rest = window('rest')
    assert [p.velocities[0] for p in at_rest.points][-1] == 0.0 and at_rest.points[-2].velocities[0] > 0
    assert jtc.rejection(at_rest, rules(distro)) is None
    hold = trajectory_to_msg(hold_trajectory(np.full(len(JOINT_NAMES), 0.2), JOINT_NAMES, 0.1))
    assert len(hold.points) == 1 and hold.header.stamp.sec == 0 and list(hold.points[0].velocities) == [0.0] * 7
    assert jtc.rejection(hold, rules(distro)) is None
    assert jtc.rejection(JointTrajectory(joint_names=list(JOINT_NAMES)), rules(distro)) == 'Empty trajectory received.'


def test_the_controllers_other_rules_in_its_own_words():
    r = rules('kilted', allow_nonzero_velocity_at_trajectory_end=True)
    partial = window()
    partial.joint_names = partial.joint_names[:-1]
    assert jtc.rejection(partial, r) == "Joints on incoming trajectory don't match the controller joints."
    unknown = window()
    unknown.joint_names[2] = 'elbow'
    assert jtc.rejection(unknown, r) == "Incoming joint elbow doesn't match the controller's joints."
    backwards = window()
    backwards.points[2].time_from_start = to_duration(0.1)
    assert jtc.rejection(backwards, r).startswith('Time between points 1 and 2 is not strictly increasing')
    short = window()
    short.points[1].velocities = [0.0] * 3
    assert jtc.rejection(short, r) == 'Mismatch between joint_names size (7) and velocities (3) at point #1.'
    effort = window()
    effort.points[0].effort = [0.0] * 7
    assert 'effort' in jtc.rejection(effort, r)
    duplicate = window()
    duplicate.joint_names[1] = 'joint1'
    assert 'Duplicate joint names' in jtc.rejection(duplicate, r)
    assert jtc.rejection(duplicate, jtc.ControllerRules(JOINT_NAMES, True, strict=False)) is None  # a real JTC
    nan = window()
    nan.points[3].positions[0] = float('nan')
    assert 'NaN' in jtc.rejection(nan, r)


def test_a_stamped_window_that_already_ended_is_rejected_only_when_the_clock_is_known():
    stamped = window(start_time=100.0)                     # ends at 100.4
    r = rules('humble')
    assert jtc.rejection(stamped, r, now=100.3) is None
    assert jtc.rejection(stamped, r, now=100.5).startswith('Received trajectory with non-zero start time')
    assert jtc.rejection(stamped, r) is None               # offline check: no clock
    stamped.header.stamp = to_time(0.0)
    assert jtc.rejection(stamped, r, now=100.5) is None     # stamp 0 = start now


def test_window_end_and_hold_arguments_are_checked():
    with pytest.raises(TrajectoryError, match="window_end 'stop'"):
        window_trajectory(CHUNK, 4, 0.1, JOINT_NAMES, window_end='stop')
    with pytest.raises(TrajectoryError, match='must be finite'):
        hold_trajectory(np.full(7, np.nan), JOINT_NAMES, 0.1)
    with pytest.raises(ValueError, match="distro 'iron'"):
        jtc.ControllerRules.for_distro('iron', JOINT_NAMES)


def test_shipped_controllers_yaml_configures_the_trajectory_controller_the_nodes_need():
    data = yaml.safe_load((REPO / 'config' / 'controllers.yaml').read_text())
    manager = data['controller_manager']['ros__parameters']
    assert manager['arm_controller']['type'] == 'joint_trajectory_controller/JointTrajectoryController'
    assert manager['joint_state_broadcaster']['type'] == 'joint_state_broadcaster/JointStateBroadcaster'
    arm = data['arm_controller']['ros__parameters']
    for name in ('sim.yaml', 'deploy.yaml'):
        node = yaml.safe_load((REPO / 'config' / name).read_text())['policy_node']['ros__parameters']
        assert sorted(arm['joints']) == sorted(node.get('robot', {}).get('joint_names', JOINT_NAMES)), name
        assert node['controller']['name'].strip('/') == 'arm_controller', name
    assert arm['command_interfaces'] == ['position']
    # the seamless windows policy_node sends are accepted on every distro with these settings
    r = {d: rules(d, **{k: arm[k] for k in jtc.PARAMETERS if k in arm}) for d in jtc.DISTROS}
    assert all(jtc.rejection(window(), each) is None for each in r.values())
