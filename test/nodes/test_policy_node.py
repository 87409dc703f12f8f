"""policy_node as a real process over DDS: the timed window it sends, and every kind of bad input."""
import time

import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from policytrim_ros.launcher import NodeSpec
from policytrim_ros.msg import ChunkStats, EpisodeEvent, EpisodeStats
from policytrim_ros.nodes.conversions import to_seconds, to_time
from policytrim_ros.nodes.runtime import LATCHED
from policytrim_ros.robots.arm import JOINT_NAMES

from harness import node_log, wait_for

H, h, DT = 8, 4, 0.1


def policy_spec(tmp_path, chunks):
    path = tmp_path / 'chunks.npy'
    np.save(path, chunks)
    return NodeSpec('policy_node', overrides={
        'policy.backend': 'replay', 'policy.checkpoint': str(path),
        'execution.chunk_size': H, 'execution.n_action_steps': h, 'execution.control_dt': DT,
        'episode.log_path': str(tmp_path / 'episodes.jsonl'), 'episode.max_observation_age_s': 0.5,
        'controller.parameter_timeout_s': 1.0})   # no controller here: windows end at rest


def good_chunks(n=3):
    ramp = np.linspace(0.0, 0.07, H)[:, None] * np.ones(len(JOINT_NAMES))
    return np.stack([ramp + 0.07 * i for i in range(n)])


def joint_state(stamp, names=JOINT_NAMES, positions=None):
    positions = np.zeros(len(names)) if positions is None else positions
    msg = JointState(name=list(names), position=[float(p) for p in positions], velocity=[0.0] * len(names))
    msg.header.stamp = to_time(stamp)
    return msg


@pytest.fixture
def policy(tmp_path, harness, launch, request):
    chunks = getattr(request, 'param', None)
    launch([policy_spec(tmp_path, good_chunks() if chunks is None else chunks)])
    t = harness.record(JointTrajectory, 'arm_controller/joint_trajectory')
    stats = harness.record(EpisodeStats, 'policytrim/episode_stats')
    calls = harness.record(ChunkStats, 'policytrim/chunk_stats')
    joints = harness.stream(JointState, 'joint_states', lambda t: None, qos=qos_profile_sensor_data)
    instruction = harness.publisher(String, 'instruction')
    wait_for(lambda: harness.node.count_publishers('arm_controller/joint_trajectory') > 0, what='policy_node')
    return dict(trajectories=t, stats=stats, calls=calls, joints=joints, instruction=instruction)


def wait_for_log(tmp_path, text):
    wait_for(lambda: text in node_log(tmp_path, 'policy_node'), what=f'"{text}" in the policy_node log')


def test_policy_node_sends_each_window_as_one_timed_trajectory(policy):
    policy['instruction'].publish(String(data='wave'))
    policy['joints'].make_msg = joint_state   # a 50 Hz joint state stream, stamped now
    first = wait_for(lambda: policy['trajectories'][:1], what='first trajectory')[0]
    t0 = to_seconds(first.header.stamp)       # the stamp of the observation it planned from
    assert list(first.joint_names) == list(JOINT_NAMES)
    assert [to_seconds(p.time_from_start) for p in first.points] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert all(len(p.velocities) == len(JOINT_NAMES) for p in first.points)
    assert list(first.points[-1].velocities) == [0.0] * len(JOINT_NAMES)   # controller unknown: at rest
    assert first.points[-2].velocities[0] > 0
    assert 0 < t0 <= time.time()
    np.testing.assert_allclose([p.positions for p in first.points], good_chunks()[0][:h], atol=1e-9)
    # the next call is planned from the first joint state stamped at/after the window's end
    second = wait_for(lambda: policy['trajectories'][1:2], what='second trajectory')[0]
    assert to_seconds(second.header.stamp) >= t0 + h * DT - 0.5 * DT
    calls = wait_for(lambda: policy['calls'][1:2] and policy['calls'], what='chunk stats')
    assert [(c.call_index, c.first_step, c.last_step, c.n_action_steps, c.chunk_size) for c in calls[:2]] == \
        [(0, 0, 3, 4, 8), (1, 4, 7, 4, 8)]


@pytest.mark.parametrize('bad, log', [
    (lambda t: joint_state(t, positions=[np.nan] + [0.0] * 6), 'NaN/inf for joints'),
    (lambda t: joint_state(t, names=JOINT_NAMES[:-1]), "missing joints ['gripper']"),
    (lambda t: joint_state(t - 5.0), 'joint_states is stale'),
    (lambda t: joint_state(0.0), 'header.stamp 0 (unset)'),
    (lambda t: joint_state(t, names=('joint1',) + JOINT_NAMES[:-1]), "names joints ['joint1'] more than once"),
    (lambda t: joint_state(t + 30.0), 'joint_states is stamped 29.9'),
], ids=['nan', 'missing', 'stale', 'stamp0', 'duplicate', 'future'])
def test_policy_node_holds_on_bad_joint_state_and_recovers_at_once(tmp_path, policy, bad, log):
    policy['instruction'].publish(String(data='wave'))
    policy['joints'].make_msg = bad
    wait_for_log(tmp_path, log)
    assert policy['trajectories'] == []      # nothing was commanded
    good_from = time.time()
    policy['joints'].make_msg = joint_state  # the node kept running: good states are used at once
    first = wait_for(lambda: policy['trajectories'], timeout=5.0, what='trajectory after a good joint state')[0]
    assert good_from - 0.1 <= to_seconds(first.header.stamp) <= time.time()   # planned from a good state
    assert node_log(tmp_path, 'policy_node').count(log) == 1        # logged once per cause


@pytest.mark.parametrize('policy', [np.full((2, H, len(JOINT_NAMES)), np.nan)], indirect=True)
def test_policy_node_holds_on_nan_chunk(tmp_path, policy):
    policy['joints'].make_msg = joint_state
    for episode in range(2):  # the node survives and serves the next episode
        policy['instruction'].publish(String(data='wave'))
        stats = wait_for(lambda: policy['stats'][episode:episode + 1], what='EpisodeStats')[0]
        assert stats.end_reason == 'error' and not stats.success and stats.inference_calls == 0
    wait_for_log(tmp_path, 'chunk has NaN/inf at step 0')
    holds = wait_for(lambda: policy['trajectories'][1:] and policy['trajectories'], what='two holds')
    for hold in holds:   # one point at the measured positions, at rest: what every controller accepts
        assert len(hold.points) == 1 and list(hold.points[0].velocities) == [0.0] * len(JOINT_NAMES)
        assert list(hold.points[0].positions) == [0.0] * len(JOINT_NAMES)


@pytest.fixture
def one_window_policy(tmp_path, harness, launch):
    """A policy node whose episodes have one window (max_episode_steps = h)."""
    spec = policy_spec(tmp_path, good_chunks())
    spec.overrides['execution.max_episode_steps'] = h
    launch([spec])
    stats = harness.record(EpisodeStats, 'policytrim/episode_stats')
    first = harness.record(JointTrajectory, 'arm_controller/joint_trajectory')
    seen = harness.record(JointState, 'joint_states', qos=qos_profile_sensor_data)   # what the node receives too
    harness.stream(JointState, 'joint_states', joint_state, qos=qos_profile_sensor_data)
    wait_for(lambda: seen, what='the joint state recorder to be matched')
    events = harness.publisher(EpisodeEvent, 'episode/event', qos=LATCHED)
    return stats, first, events, seen


def test_a_success_on_the_last_step_counts_though_its_observation_came_first(harness, one_window_policy):
    stats, trajectories, events, seen = one_window_policy
    start = EpisodeEvent(event=EpisodeEvent.START, episode_id='last-step', task='reach', instruction='wave')
    start.header.stamp = to_time(time.time())
    events.publish(start)
    end = to_seconds(wait_for(lambda: trajectories[:1], what='the only window')[0].header.stamp) + h * DT
    # the joint state that completes the window (stamped at its end, within half a step) reaches
    # the node first and it is out of steps; the simulator's verdict on that last step follows
    wait_for(lambda: any(to_seconds(m.header.stamp) >= end - 0.5 * DT for m in seen),
             what="a joint state at the window's end")
    success = EpisodeEvent(event=EpisodeEvent.SUCCESS, episode_id='last-step', task='reach', instruction='wave')
    success.header.stamp = to_time(end)
    events.publish(success)
    episode = wait_for(lambda: stats[:1], what='EpisodeStats')[0]
    assert (episode.success, episode.end_reason, episode.steps) == (True, 'success', h)


def test_a_divergence_window_is_cut_when_the_arm_stays_behind_its_plan(tmp_path, harness, launch):
    """horizon divergence: windows of up to H = 8 steps; the arm (joint states held at 0) falls
    behind the ramp the chunk plans, so after replan_min_steps the window is cut and replanned."""
    spec = policy_spec(tmp_path, good_chunks())
    spec.overrides.update({'execution.n_action_steps': H, 'execution.horizon': 'divergence',
                           'execution.replan_threshold': [0.005] * len(JOINT_NAMES),
                           'execution.replan_min_steps': 2})
    launch([spec])
    trajectories = harness.record(JointTrajectory, 'arm_controller/joint_trajectory')
    calls = harness.record(ChunkStats, 'policytrim/chunk_stats')
    harness.stream(JointState, 'joint_states', joint_state, qos=qos_profile_sensor_data)
    harness.publisher(String, 'instruction').publish(String(data='wave'))
    first, second = wait_for(lambda: trajectories[1:2] and trajectories[:2], what='a replanned window')
    assert len(first.points) == H                                  # planned for the whole chunk
    cut_after = to_seconds(second.header.stamp) - to_seconds(first.header.stamp)
    assert 2 * DT - 0.06 <= cut_after < H * DT - 0.5 * DT          # cut, not run to its end
    stats = wait_for(lambda: calls[1:2] and calls, what='two ChunkStats')
    assert (stats[0].n_action_steps, stats[0].first_step) == (H, 0)
    assert 2 <= stats[1].first_step < H                            # the cut window's executed steps
