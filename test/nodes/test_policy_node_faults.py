"""policy_node faults found by fuzzing it as a process: each case moved the arm, or hid a mistake.

Configuration mistakes stop the node with one line naming the key (rc 2); runtime parameter
changes are refused; a restarted node never replays an episode that had ended; inputs that never
arrive, or stop arriving, are logged and end the episode with their own reason.
"""
import subprocess
import time

import numpy as np
import pytest
import yaml
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from policytrim_ros import launcher
from policytrim_ros.msg import EpisodeEvent, EpisodeStats
from policytrim_ros.nodes.conversions import to_time
from policytrim_ros.nodes.runtime import LATCHED
from policytrim_ros.robots.arm import JOINT_NAMES

from harness import node_log, wait_for
from test_policy_node import good_chunks, h, joint_state, policy_spec


def start_fails(spec, params_file=None):
    cmd = spec.command() + (['--params-file', str(params_file)] if params_file else [])
    done = subprocess.run(cmd, env=launcher.ros_env(), capture_output=True, text=True, timeout=120)
    return done.returncode, done.stderr


@pytest.mark.parametrize('overrides, file, message', [
    ({'safty.max_velocity': [1.0] * 7}, None, "unknown parameter 'safty.max_velocity' for policy_node "
                                              "(did you mean 'safety.max_velocity'?)"),
    ({}, {'execution': {'n_action_step': 16}}, "unknown parameter 'execution.n_action_step' for policy_node "
                                               "(did you mean 'execution.n_action_steps'?)"),
    ({'execution.n_action_steps': True}, None, 'execution.n_action_steps must be int, got True'),
    ({'safety.max_velocity': [1.0, 1.0, 1.0]}, None, 'safety.max_velocity has 3 values [1.0, 1.0, 1.0] for the 7 joints'),
    ({'policy.backend': 'torch', 'policy.checkpoint': '/nonexistent/checkpoint'}, None, '/nonexistent/checkpoint'),
], ids=['misspelled-key', 'misspelled-key-in-yaml', 'bool-for-int', 'safety-length', 'missing-checkpoint'])
def test_configuration_mistakes_stop_the_node_with_one_line(tmp_path, overrides, file, message):
    spec = policy_spec(tmp_path, good_chunks())
    spec.overrides.update(overrides)
    params = None
    if file is not None:
        params = tmp_path / 'params.yaml'
        params.write_text(yaml.safe_dump({'policy_node': {'ros__parameters': file}}))
    code, stderr = start_fails(spec, params)
    assert code == 2 and message in stderr, stderr[-2000:]
    assert 'Traceback' not in stderr and len(stderr.strip().splitlines()) <= 3, stderr[-2000:]


def test_parameter_changes_at_run_time_are_refused(tmp_path, harness, launch):
    launch([policy_spec(tmp_path, good_chunks())])
    setter = harness.node.create_client(SetParameters, 'policy_node/set_parameters')
    getter = harness.node.create_client(GetParameters, 'policy_node/get_parameters')
    assert setter.wait_for_service(timeout_sec=20.0) and getter.wait_for_service(timeout_sec=5.0)
    for name, value in (('execution.n_action_steps', ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=16)),
                        ('execution.n_action_steps', ParameterValue(type=ParameterType.PARAMETER_STRING, string_value='abc')),
                        ('safety.position_lower', ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY,
                                                                 double_array_value=[5.0] * 7))):
        future = setter.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=value)]))
        result = wait_for(lambda: future.done() and future.result(), what='set_parameters')
        assert not result.results[0].successful and 'read-only' in result.results[0].reason
    future = getter.call_async(GetParameters.Request(names=['execution.n_action_steps']))
    assert wait_for(lambda: future.done() and future.result(), what='get').values[0].integer_value == h


def start_event(episode_id, stamp):
    msg = EpisodeEvent(event=EpisodeEvent.START, episode_id=episode_id, task='reach', instruction='wave')
    msg.header.stamp = to_time(stamp)
    return msg


@pytest.mark.parametrize('log_path', [True, False], ids=['logged', 'unlogged'])
def test_a_restarted_node_does_not_replay_an_ended_episode(tmp_path, harness, launch, log_path):
    """The START event is latched: a node that restarts gets it again. Finished ids in the log, or
    a robot clock that has run on since the START, keep it from moving the arm a second time."""
    spec = policy_spec(tmp_path, good_chunks())
    spec.overrides['execution.max_episode_steps'] = h   # one window, then max_steps
    if not log_path:
        spec.overrides['episode.log_path'] = ''
    trajectories = harness.record(JointTrajectory, 'arm_controller/joint_trajectory')
    stats = harness.record(EpisodeStats, 'policytrim/episode_stats')
    first = launch([spec])
    harness.stream(JointState, 'joint_states', joint_state, qos=qos_profile_sensor_data)
    events = harness.publisher(EpisodeEvent, 'episode/event', LATCHED)
    events.publish(start_event('ep-1', time.time()))
    wait_for(lambda: stats, what='the episode to end')
    sent = len(trajectories)
    assert sent >= 2 and stats[0].episode_id == 'ep-1'   # its window, then the hold
    first.stop()
    launch([spec])   # seconds later: the robot's joint states are stamped well after the START
    wait_for(lambda: 'ignoring START of episode ep-1' in node_log(tmp_path, 'policy_node'),
             what='the replayed START to be ignored')
    time.sleep(1.0)
    assert len(trajectories) == sent and len(stats) == 1


def test_inputs_that_never_arrive_are_named_then_the_episode_ends(tmp_path, harness, launch):
    spec = policy_spec(tmp_path, good_chunks())
    spec.overrides['episode.joint_states_timeout_s'] = 2.0
    launch([spec])
    stats = harness.record(EpisodeStats, 'policytrim/episode_stats')
    instruction = harness.publisher(String, 'instruction')
    instruction.publish(String(data='wave'))
    wait_for(lambda: 'waits for joint_states (nothing received)' in node_log(tmp_path, 'policy_node'),
             what='the missing input to be named')
    episode = wait_for(lambda: stats[:1], what='EpisodeStats')[0]
    assert (episode.end_reason, episode.success, episode.inference_calls) == ('joint_states_lost', False, 0)


def test_joint_states_that_stop_mid_episode_end_it(tmp_path, harness, launch):
    spec = policy_spec(tmp_path, np.stack([good_chunks()[0]] * 50))
    spec.overrides.update({'episode.joint_states_timeout_s': 1.0, 'execution.max_episode_steps': 200})
    launch([spec])
    stats = harness.record(EpisodeStats, 'policytrim/episode_stats')
    trajectories = harness.record(JointTrajectory, 'arm_controller/joint_trajectory')
    joints = harness.stream(JointState, 'joint_states', joint_state, qos=qos_profile_sensor_data)
    harness.publisher(String, 'instruction').publish(String(data='wave'))
    wait_for(lambda: trajectories[1:], what='two windows')
    joints.make_msg = lambda t: None          # the driver dies
    episode = wait_for(lambda: stats[:1], what='EpisodeStats')[0]
    assert episode.end_reason == 'joint_states_lost' and episode.inference_calls >= 2
    assert 'no joint state on joint_states for' in node_log(tmp_path, 'policy_node')


@pytest.mark.parametrize('allow, window_end', [(False, 'rest'), (True, 'moving')])
def test_windows_end_the_way_the_controller_accepts(tmp_path, harness, launch, allow, window_end):
    harness.fake_controller(joints=list(JOINT_NAMES), allow_nonzero_velocity_at_trajectory_end=allow)
    launch([policy_spec(tmp_path, good_chunks())])
    trajectories = harness.record(JointTrajectory, 'arm_controller/joint_trajectory')
    harness.stream(JointState, 'joint_states', joint_state, qos=qos_profile_sensor_data)
    harness.publisher(String, 'instruction').publish(String(data='wave'))
    first = wait_for(lambda: trajectories[:1], what='a window')[0]
    assert (first.points[-1].velocities[0] != 0.0) == allow
    assert f'allow_nonzero_velocity_at_trajectory_end={str(allow).lower()} -> windows end {window_end}' in \
        node_log(tmp_path, 'policy_node')


@pytest.mark.parametrize('controller, overrides, message', [
    ({'joints': ['shoulder', 'elbow'], 'allow_nonzero_velocity_at_trajectory_end': True}, {},
     "controller arm_controller's joints ['shoulder', 'elbow'] are not robot.joint_names"),
    ({'joints': list(JOINT_NAMES), 'allow_nonzero_velocity_at_trajectory_end': False},
     {'controller.window_end': 'moving'}, "allow_nonzero_velocity_at_trajectory_end is false"),
], ids=['joints', 'moving-ends-refused'])
def test_a_controller_that_would_reject_every_window_stops_the_node(tmp_path, harness, controller, overrides,
                                                                   message):
    harness.fake_controller(**controller)
    spec = policy_spec(tmp_path, good_chunks())
    spec.overrides.update({**overrides, 'controller.parameter_timeout_s': 10.0})
    code, stderr = start_fails(spec)
    assert code == 2 and message in stderr, stderr[-2000:]
