"""sim_node as a real process: JTC semantics on its trajectory topic, reset service, episode events."""
import subprocess

import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory

from policytrim_ros.envs.base import JOINT_NAMES
from policytrim_ros.execution.trajectory import window_trajectory
from policytrim_ros import launcher
from policytrim_ros.launcher import NodeSpec
from policytrim_ros.msg import EpisodeEvent
from policytrim_ros.nodes.conversions import to_seconds, trajectory_to_msg
from policytrim_ros.nodes.runtime import LATCHED
from policytrim_ros.srv import ResetEpisode

from conftest import node_log, wait_for


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


def test_sim_node_rejects_malformed_trajectories_and_holds(sim):
    t0 = latest_stamp(sim['joints'])
    good = trajectory_to_msg(window_trajectory(np.tile(sim['joints'][-1].position, (4, 1)), 3, 0.1, JOINT_NAMES))
    bad = trajectory_to_msg(window_trajectory(np.zeros((4, 7)), 3, 0.1, [f'j{i}' for i in range(7)]))
    sim['command'].publish(bad)
    wait_for(lambda: 'trajectory rejected: joint names must match' in sim['log'](), what='rejection log')
    reversed_time = trajectory_to_msg(window_trajectory(np.zeros((4, 7)), 3, 0.1, JOINT_NAMES))
    reversed_time.points[1].time_from_start, reversed_time.points[2].time_from_start = \
        reversed_time.points[2].time_from_start, reversed_time.points[1].time_from_start
    sim['command'].publish(reversed_time)
    wait_for(lambda: 'strictly increasing' in sim['log'](), what='rejection log')
    assert latest_stamp(sim['joints']) == t0  # lockstep: time stood still, the arm held
    sim['command'].publish(good)              # a valid window runs for exactly 3 steps
    wait_for(lambda: latest_stamp(sim['joints']) >= t0 + 0.3 - 1e-6, what='3 steps')
    assert latest_stamp(sim['joints']) == pytest.approx(t0 + 0.3)


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
    ('policy_node', {'policy.backend': 'torch', 'policy.checkpoint': 'package://policytrim_ros/models/bc-teleop',
                     'topics.cameras': ['camera/image_raw', 'camera2/image_raw']},
     'topics.cameras names 2 topics'),
], ids=['sim_node', 'policy_node'])
def test_nodes_refuse_a_topic_per_camera_mismatch(node, overrides, message):
    done = subprocess.run(NodeSpec(node, overrides=overrides).command(), env=launcher.ros_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
