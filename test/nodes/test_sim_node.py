"""sim_node as a real process: a controller as strict as a real JTC (topic and action), reset
service, episode events."""
import subprocess

import numpy as np
import pytest
import yaml
from rcl_interfaces.srv import GetParameters
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory

from policytrim_ros import launcher
from policytrim_ros.execution import jtc
from policytrim_ros.launcher import NodeSpec
from policytrim_ros.msg import EpisodeEvent
from policytrim_ros.nodes.conversions import to_seconds, trajectory_to_msg
from policytrim_ros.nodes.runtime import LATCHED
from policytrim_ros.nodes.sim_controller import FollowJointTrajectory
from policytrim_ros.robots.arm import JOINT_NAMES
from policytrim_ros.srv import ResetEpisode
from policytrim_ros.trajectory import hold_trajectory, window_trajectory

from harness import node_log, wait_for


@pytest.fixture
def sim(harness, launch, tmp_path):
    launch([NodeSpec('sim_node', overrides={'sim.idle_publish_rate_hz': 20.0})])
    joints = harness.record(JointState, 'joint_states', qos_profile_sensor_data)
    events = harness.record(EpisodeEvent, 'episode/event', LATCHED)
    command = harness.publisher(JointTrajectory, 'arm_controller/joint_trajectory')
    reset = harness.node.create_client(ResetEpisode, 'sim/reset_episode')
    assert reset.wait_for_service(timeout_sec=15.0)
    wait_for(lambda: joints, what='joint_states')
    return dict(joints=joints, events=events, command=command, reset=reset, log=lambda: node_log(tmp_path, 'sim_node'))


def latest_stamp(joints):
    return to_seconds(joints[-1].header.stamp)


def call(client, request):
    future = client.call_async(request)
    return wait_for(lambda: future.done() and future.result(), what='service response')


def test_reset_announces_the_episode_and_rejects_unknown_tasks(sim):
    response = call(sim['reset'], ResetEpisode.Request(task='push', seed=3, episode_id='push-003'))
    assert response.success and 'cube' in response.instruction
    start = wait_for(lambda: [e for e in sim['events'] if e.episode_id == 'push-003'], what='START')[0]
    assert (start.event, start.task, start.instruction) == (EpisodeEvent.START, 'push', response.instruction)
    bad = call(sim['reset'], ResetEpisode.Request(task='psuh', seed=0, episode_id='x'))
    assert not bad.success and "did you mean 'push'" in bad.message


def hold_here(sim):
    return trajectory_to_msg(hold_trajectory(sim['joints'][-1].position, JOINT_NAMES, 0.1))


def moving_window(sim, window_end='moving'):
    chunk = np.asarray(sim['joints'][-1].position) + np.linspace(0.0, 0.04, 4)[:, None]
    return trajectory_to_msg(window_trajectory(chunk, 3, 0.1, JOINT_NAMES, window_end=window_end))


def test_sim_controller_rejects_what_a_default_jazzy_controller_rejects(sim):
    t0 = latest_stamp(sim['joints'])
    sim['command'].publish(JointTrajectory(joint_names=list(JOINT_NAMES)))    # the old empty "hold"
    wait_for(lambda: 'trajectory rejected: Empty trajectory received.' in sim['log'](), what='empty rejected')
    sim['command'].publish(moving_window(sim))   # ends moving: Jazzy's default refuses it
    wait_for(lambda: 'Velocity of last trajectory point of joint joint1 is not zero' in sim['log'](),
             what='moving end rejected')
    bad = trajectory_to_msg(window_trajectory(np.zeros((4, 7)), 3, 0.1, [f'j{i}' for i in range(7)], window_end='rest'))
    sim['command'].publish(bad)
    wait_for(lambda: "Incoming joint j0 doesn't match the controller's joints" in sim['log'](), what='joints')
    reversed_time = moving_window(sim, 'rest')
    reversed_time.points[1].time_from_start, reversed_time.points[2].time_from_start = \
        reversed_time.points[2].time_from_start, reversed_time.points[1].time_from_start
    sim['command'].publish(reversed_time)
    wait_for(lambda: 'not strictly increasing' in sim['log'](), what='time order rejected')
    assert latest_stamp(sim['joints']) == t0  # lockstep: time stood still, the arm held
    sim['command'].publish(moving_window(sim, 'rest'))   # a window that ends at rest runs 3 steps
    wait_for(lambda: latest_stamp(sim['joints']) >= t0 + 0.3 - 1e-6, what='3 steps')
    assert latest_stamp(sim['joints']) == pytest.approx(t0 + 0.3)
    sim['command'].publish(hold_here(sim))      # the one-point hold runs one step and stops
    wait_for(lambda: latest_stamp(sim['joints']) >= t0 + 0.4 - 1e-6, what='hold step')


@pytest.fixture
def humble_sim(harness, launch, tmp_path):
    """A Humble-rules sim, in real time, whose controller file sets a 1 mm path tolerance on joint2."""
    controllers = tmp_path / 'controllers.yaml'
    controllers.write_text(yaml.safe_dump({'arm_controller': {'ros__parameters': {
        'constraints': {'joint2': {'trajectory': 0.001}}}}}))
    launch([NodeSpec('sim_node', overrides={'sim.idle_publish_rate_hz': 20.0, 'controller.distro': 'humble',
                                            'controller.params_file': str(controllers),
                                            'sim.real_time_factor': 1.0})])   # goals take their time
    joints = harness.record(JointState, 'joint_states', qos_profile_sensor_data)
    wait_for(lambda: joints, what='joint_states')
    return dict(joints=joints, log=lambda: node_log(tmp_path, 'sim_node'))


def test_sim_controller_takes_its_parameters_from_a_controllers_file(harness, humble_sim):
    client = harness.node.create_client(GetParameters, 'arm_controller/get_parameters')
    assert client.wait_for_service(timeout_sec=15.0)
    names = ['allow_nonzero_velocity_at_trajectory_end', 'constraints.joint2.trajectory', 'joints']
    values = call(client, GetParameters.Request(names=names)).values
    assert values[0].bool_value is True                     # Humble's default
    assert values[1].double_value == pytest.approx(0.001)   # from the file
    assert list(values[2].string_array_value) == list(JOINT_NAMES)


def test_a_misspelled_controller_parameter_stops_the_sim(tmp_path):
    controllers = tmp_path / 'controllers.yaml'
    controllers.write_text(yaml.safe_dump({'arm_controller': {'ros__parameters': {
        'allow_nonzero_velocity_at_trajectory_ends': True}}}))
    done = subprocess.run(NodeSpec('sim_node', overrides={'controller.params_file': str(controllers)}).command(),
                          env=launcher.ros_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert ("unknown parameter 'allow_nonzero_velocity_at_trajectory_ends'" in done.stderr
            and "did you mean 'allow_nonzero_velocity_at_trajectory_end'" in done.stderr), done.stderr[-2000:]


@pytest.mark.skipif(FollowJointTrajectory is None, reason='control_msgs is not installed (bash '
                    '../shared/ros2-extras/install.sh .venv builds it)')
def test_sim_serves_follow_joint_trajectory_like_a_jtc(harness, humble_sim):
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient
    client = ActionClient(harness.node, FollowJointTrajectory, 'arm_controller/follow_joint_trajectory')
    assert client.wait_for_server(timeout_sec=15.0)

    def send(msg):
        future = client.send_goal_async(FollowJointTrajectory.Goal(trajectory=msg))
        return wait_for(lambda: future.done() and future.result(), what='goal response')

    def result(handle):
        future = handle.get_result_async()
        return wait_for(lambda: future.done() and future.result(), what='goal result')

    sim = humble_sim
    assert not send(JointTrajectory(joint_names=list(JOINT_NAMES))).accepted   # empty: rejected
    still = send(hold_here(sim))                                               # runs and succeeds
    done = result(still)
    assert (done.status, done.result.error_code) == (GoalStatus.STATUS_SUCCEEDED, jtc.SUCCESSFUL)
    here = np.tile(sim['joints'][-1].position, (10, 1))
    first = send(trajectory_to_msg(window_trajectory(here, 10, 0.1, JOINT_NAMES)))   # runs 1 s
    second = send(hold_here(sim))           # a newer goal preempts the active one: INVALID_GOAL
    aborted = result(first)
    assert (aborted.status, aborted.result.error_code) == (GoalStatus.STATUS_ABORTED, jtc.INVALID_GOAL)
    assert aborted.result.error_string == jtc.PREEMPTED_MESSAGE
    assert result(second).status == GoalStatus.STATUS_SUCCEEDED
    far = np.asarray(sim['joints'][-1].position) + np.linspace(0.0, 0.3, 8)[:, None]
    fast = send(trajectory_to_msg(window_trajectory(far, 8, 0.1, JOINT_NAMES)))   # lags > 1 mm on joint2
    violated = result(fast)
    assert (violated.status, violated.result.error_code) == (GoalStatus.STATUS_ABORTED, jtc.PATH_TOLERANCE_VIOLATED)
    slow = send(trajectory_to_msg(window_trajectory(far * 0 + far[0], 8, 1.0, JOINT_NAMES)))
    cancel = slow.cancel_goal_async()
    wait_for(lambda: cancel.done(), what='cancel response')
    assert result(slow).status == GoalStatus.STATUS_CANCELED
    client.destroy()


def test_sim_node_publishes_one_image_topic_per_camera(harness, launch):
    launch([NodeSpec('sim_node', overrides={'sim.idle_publish_rate_hz': 20.0, 'env.image_width': 32,
                                            'env.image_height': 24,
                                            'env.cameras': ['scene_camera', 'wrist_camera']})])
    scene = harness.record(Image, 'camera/image_raw', qos_profile_sensor_data)
    wrist = harness.record(Image, 'camera2/image_raw', qos_profile_sensor_data)
    wait_for(lambda: scene and wrist, what='both camera topics')
    assert (scene[-1].header.frame_id, scene[-1].width, scene[-1].height) == ('scene_camera', 32, 24)
    assert (wrist[-1].header.frame_id, wrist[-1].width, wrist[-1].height) == ('wrist_camera', 32, 24)


@pytest.mark.parametrize('node, overrides, message', [
    ('sim_node', {'env.cameras': ['scene_camera', 'wrist_camera'], 'topics.cameras': ['camera/image_raw']},
     "topics.cameras names 1 topics ['camera/image_raw'] for the 2 cameras of env.cameras"),
    ('policy_node', {'policy.backend': 'torch', 'policy.checkpoint': 'TINY_CHECKPOINT',   # one camera
                     'topics.cameras': ['camera/image_raw', 'camera2/image_raw']},
     'topics.cameras names 2 topics'),
], ids=['sim_node', 'policy_node'])
def test_nodes_refuse_a_topic_per_camera_mismatch(node, overrides, message, tiny_checkpoint):
    overrides = {k: str(tiny_checkpoint) if v == 'TINY_CHECKPOINT' else v for k, v in overrides.items()}
    done = subprocess.run(NodeSpec(node, overrides=overrides).command(), env=launcher.ros_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
