"""Offline scores of recorded episodes against hand-worked values, the sampling they drive, and
the executed windows read back from robot-style bags (commands only, or with ChunkStats)."""
import math
import re
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from policytrim_ros.config import ConfigError, from_dict
from policytrim_ros.data.bag import COMMAND_TOPIC, EVENT_TOPIC, IMAGE_TOPIC, JOINT_STATES_TOPIC, TOPIC_TYPES, typestore
from policytrim_ros.data.dataset import ChunkDataset
from policytrim_ros.data.episode import Episode
from policytrim_ros.data.executed import CHUNK_STATS_TOPIC, CHUNK_STATS_TYPE, load_policy_bags, read_policy_bag
from policytrim_ros.robots.arm import JOINT_NAMES
from policytrim_ros.training.offline import OfflineConfig, sample_probabilities
from policytrim_ros.training.offline_rewards import OfflineRewardConfig, episode_scores

REPO = Path(__file__).resolve().parents[2]
# one task, four episodes: successes at 10, 20 and 30 steps, one failure (its 50 steps do not count)
TASKS, SUCCESS, STEPS = ['reach'] * 4, [True, True, False, True], [10, 20, 50, 30]


def test_stage2_rewards_of_a_task_group_by_hand():
    scores = episode_scores(TASKS, SUCCESS, STEPS, [0.5] * 4, OfflineRewardConfig(reward='steps'))
    # S_base = 1.3 * mean(10, 20, 30) = 26; mu = 20, sigma = sqrt(200 / 3) = 8.165 (> floor 5)
    # R = 1 + 0.8 * max(0, 26 - S) / 26 - 0.15 * tanh(|S - 20| / 8.165)
    assert scores.step_budget == {'reach': pytest.approx(26.0)}
    penalty = 0.15 * math.tanh(10 / math.sqrt(200 / 3))
    expected = [1 + 0.8 * 16 / 26 - penalty, 1 + 0.8 * 6 / 26, 0.0, 1 - penalty]
    np.testing.assert_allclose(scores.reward, expected, rtol=1e-9)
    np.testing.assert_allclose(scores.reward, [1.366150, 1.184615, 0.0, 0.873843], atol=1e-6)
    # advantages standardized within the task (population std), AWR weights exp(A / 1)
    mean, std = np.mean(expected), np.std(expected)
    np.testing.assert_allclose(scores.advantage, (np.array(expected) - mean) / (std + 1e-6), rtol=1e-9)
    np.testing.assert_allclose(scores.weight, np.exp(scores.advantage), rtol=1e-9)
    assert scores.weight[0] > scores.weight[1] > scores.weight[3] > scores.weight[2]   # fastest first, failure last


def test_awr_temperature_and_clip():
    sharp = episode_scores(TASKS, SUCCESS, STEPS, [0.5] * 4, OfflineRewardConfig(temperature=0.25, max_weight=5.0))
    a = sharp.advantage
    np.testing.assert_allclose(sharp.weight, np.minimum(np.exp(a / 0.25), 5.0), rtol=1e-9)
    assert sharp.weight[0] == 5.0 and sharp.weight[2] == pytest.approx(math.exp(a[2] / 0.25))


def test_stage1_rewards_favour_the_longer_window_among_successes():
    scores = episode_scores(['push'] * 3, [True, True, False], [60, 60, 60], [0.25, 1.0, 1.0],
                            OfflineRewardConfig(reward='extension'))
    np.testing.assert_allclose(scores.reward, [1.25, 2.0, 0.0])   # success * (1 + 1.0 * gamma)
    assert scores.weight[1] > scores.weight[0] > scores.weight[2]


def test_filtered_keeps_the_best_share_of_each_tasks_successes():
    config = OfflineRewardConfig(weighting='filtered', keep_fraction=0.5)
    scores = episode_scores(TASKS + ['push'], SUCCESS + [True], STEPS + [99], [0.5] * 5, config)
    # reach: ceil(0.5 * 3) = 2 of its successes, the two fastest (10 and 20 steps); push's only success
    np.testing.assert_array_equal(scores.weight, [1, 1, 0, 0, 1])
    everything = episode_scores(TASKS, SUCCESS, STEPS, [0.5] * 4, OfflineRewardConfig(reward='success',
                                                                                        weighting='filtered'))
    np.testing.assert_array_equal(everything.weight, [1, 1, 0, 1])


def test_tasks_are_separate_groups_and_equal_rewards_give_weight_one():
    scores = episode_scores(['reach', 'push', 'push'], [True, True, True], [10, 90, 90], [0.5] * 3,
                            OfflineRewardConfig(reward='success'))
    np.testing.assert_array_equal(scores.advantage, 0.0)
    np.testing.assert_array_equal(scores.weight, 1.0)


@pytest.mark.parametrize('values, key, rule', [
    ({'reward': 'speed'}, 'reward', "'speed' must be one of"),
    ({'weighting': 'awr2'}, 'weighting', 'must be one of'),
    ({'temperature': 0.0}, 'temperature', 'must be finite and > 0'),
    ({'max_weight': 0.5}, 'max_weight', '>= 1'),
    ({'keep_fraction': 0.0}, 'keep_fraction', 'in (0, 1]'),
])
def test_reward_config_names_the_bad_field(values, key, rule):
    with pytest.raises(ConfigError, match=re.escape(key) + '.*' + re.escape(rule)):
        from_dict(OfflineRewardConfig, values)


def test_offline_config_needs_the_deployed_checkpoint_and_knows_its_keys():
    with pytest.raises(ConfigError, match='init_from'):
        from_dict(OfflineConfig, {})
    with pytest.raises(ConfigError, match="unknown config key 'rewards.temprature'.*temperature"):
        from_dict(OfflineConfig, {'init_from': 'x', 'rewards': {'temprature': 1.0}})


def episode(task, steps, call_index, success=True):
    return Episode(task=task, instruction=task, seed=0, style='policy', success=success, control_dt=0.1,
                   joint_names=JOINT_NAMES, images=np.zeros((steps, 8, 8, 3), np.uint8),
                   joint_positions=np.zeros((steps, 7)), actions=np.zeros((steps, 7)), times=np.arange(steps) * 0.1,
                   call_index=np.asarray(call_index))


def test_samples_follow_episode_weights_calls_and_task_shares():
    episodes = [episode('reach', 4, [0, 0, 1, 1]), episode('reach', 2, [0, 1]), episode('push', 3, [0, 0, 0])]
    dataset = ChunkDataset(episodes, 4, only_successful=False)
    weights = np.array([3.0, 0.0, 1.0])
    p = sample_probabilities(dataset, weights, 'steps', balance_tasks=False)
    np.testing.assert_allclose(p, np.array([3, 3, 3, 3, 0, 0, 1, 1, 1]) / 15)
    p = sample_probabilities(dataset, weights, 'calls', balance_tasks=True)
    np.testing.assert_allclose(p, [0.25, 0, 0.25, 0, 0, 0, 0.5, 0, 0])   # reach and push: half each
    with pytest.raises(ValueError, match='weight 0'):
        sample_probabilities(dataset, np.zeros(3), 'steps', True)


NEWER_FIELDS = 'float32 speed_factor\n'
"""A field a later ChunkStats may carry after ours: a bag keeps the definition it was recorded with."""


def write_robot_bag(path, steps=10, h=4, chunk_stats=None, success=True, newer=False):
    """A bag as ``ros2 bag record`` of a deployed policy gives it: an image and a joint state every
    0.1 s, every h steps a command of h points (its last one cut short by the end event after
    ``steps`` steps), and, if ``chunk_stats`` is (H, latency), one ChunkStats per call (of a
    later definition with ``newer``)."""
    store = typestore()
    if newer:
        store = get_typestore(Stores.ROS2_KILTED)
        for name in ('EpisodeEvent', 'ChunkStats'):
            text = (REPO / 'msg' / f'{name}.msg').read_text() + (NEWER_FIELDS if name == 'ChunkStats' else '')
            store.register(get_types_from_msg(text, f'policytrim_ros/msg/{name}'))
    t = store.types
    types = {**TOPIC_TYPES, CHUNK_STATS_TOPIC: CHUNK_STATS_TYPE}
    topics = [IMAGE_TOPIC, JOINT_STATES_TOPIC, COMMAND_TOPIC, EVENT_TOPIC] + ([CHUNK_STATS_TOPIC] if chunk_stats else [])

    def header(k):
        ns = 1_000_000_000 + k * 100_000_000   # a clock that does not start at 0
        return t['std_msgs/msg/Header'](stamp=t['builtin_interfaces/msg/Time'](sec=ns // 10**9, nanosec=ns % 10**9), frame_id='')

    def event(kind, k):
        return t[TOPIC_TYPES[EVENT_TOPIC]](header=header(k), event=kind, episode_id='e', task='reach',
                                           instruction='go', step=k)

    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = {topic: writer.add_connection(topic, types[topic], typestore=store) for topic in topics}

        def put(topic, k, msg):
            writer.write(conn[topic], 1_000_000_000 + k * 100_000_000, store.serialize_cdr(msg, types[topic]))

        put(EVENT_TOPIC, 0, event(0, 0))
        for k in range(steps + 2):   # the recorder keeps running after the end event
            put(IMAGE_TOPIC, k, t['sensor_msgs/msg/Image'](header=header(k), height=2, width=2, encoding='rgb8', is_bigendian=0,
                                                           step=6, data=np.full(12, k, np.uint8)))
            put(JOINT_STATES_TOPIC, k, t['sensor_msgs/msg/JointState'](
                header=header(k), name=list(JOINT_NAMES), position=np.full(7, float(k)), velocity=np.zeros(0),
                effort=np.zeros(0)))
            if k % h == 0 and k < steps:
                put(COMMAND_TOPIC, k, t['trajectory_msgs/msg/JointTrajectory'](
                    header=header(k), joint_names=list(JOINT_NAMES), points=[
                        t['trajectory_msgs/msg/JointTrajectoryPoint'](
                            positions=np.full(7, k + i + 1.0), velocities=np.zeros(0), accelerations=np.zeros(0),
                            effort=np.zeros(0), time_from_start=t['builtin_interfaces/msg/Duration'](
                                sec=0, nanosec=(i + 1) * 100_000_000)) for i in range(h)]))
                if chunk_stats:
                    n = min(h, steps - k)
                    put(CHUNK_STATS_TOPIC, k, t[CHUNK_STATS_TYPE](
                        header=header(k), episode_id='e', call_index=k // h, chunk_size=chunk_stats[0],
                        n_action_steps=n, first_step=k, last_step=k + n - 1, inference_latency_s=chunk_stats[1],
                        weights_version=3, sampling_seed=7, **({'speed_factor': 1.0} if newer else {})))
        put(EVENT_TOPIC, steps, event(1 if success else 2, steps))
    return path


def test_windows_come_from_the_commands_of_a_plain_recording(tmp_path):
    recorded = read_policy_bag(write_robot_bag(tmp_path / 'plain'))
    assert recorded.source == 'commands' and recorded.episode.steps == 10 and recorded.episode.success
    assert [(w.first_step, w.steps, w.n_action_steps, w.chunk_size) for w in recorded.windows] == \
        [(0, 4, 4, 0), (4, 4, 4, 0), (8, 2, 4, 0)]   # the last command's 4 points, cut at step 10
    assert recorded.n_action_steps == 4.0 and recorded.acceptance_ratio(16) == 0.25
    np.testing.assert_array_equal(recorded.episode.actions[:, 0], np.arange(1, 11))


def test_chunk_stats_give_h_big_h_and_latency(tmp_path):
    recorded = read_policy_bag(write_robot_bag(tmp_path / 'stats', chunk_stats=(8, 0.02)))
    assert recorded.source == 'chunk_stats'
    assert [(w.first_step, w.steps, w.n_action_steps, w.chunk_size) for w in recorded.windows] == \
        [(0, 4, 4, 8), (4, 4, 4, 8), (8, 2, 2, 8)]
    assert recorded.windows[0].inference_latency_s == pytest.approx(0.02)
    assert recorded.n_action_steps == 4.0   # the last call, cut to 2 steps by the step limit, left out
    assert recorded.acceptance_ratio(16) == 0.5   # H from the bag, not the default


def test_chunk_stats_of_a_later_definition_decode_with_the_recorded_one(tmp_path):
    recorded = read_policy_bag(write_robot_bag(tmp_path / 'newer', chunk_stats=(8, 0.02), newer=True))
    assert recorded.source == 'chunk_stats' and [w.chunk_size for w in recorded.windows] == [8, 8, 8]


def test_load_policy_bags_lists_what_it_skips(tmp_path):
    write_robot_bag(tmp_path / 'a' / 'ok', h=5, success=False)
    (tmp_path / 'a' / 'broken').mkdir()
    (tmp_path / 'a' / 'broken' / 'x.mcap').write_bytes(b'not an mcap file')
    found = load_policy_bags(tmp_path / 'a')
    assert found.bags == 2 and len(found.episodes) == 1 and not found.episodes[0].episode.success
    assert [w.n_action_steps for w in found.episodes[0].windows] == [5, 5]
    assert len(found.skipped) == 1 and 'broken' in found.skipped[0][0]


def test_a_task_without_a_success_scores_zero_and_has_no_step_budget():
    scores = episode_scores(['push', 'push', 'reach'], [False, False, True], [150, 150, 20], [0.5] * 3)
    np.testing.assert_array_equal(scores.reward[:2], 0.0)
    np.testing.assert_array_equal(scores.weight, [0.0, 0.0, 1.0])   # only failures: nothing to imitate
    assert scores.step_budget == {'reach': pytest.approx(26.0)}
    rare = episode_scores(['push'] * 11, [True] + [False] * 10, [50] * 11, [0.5] * 11)   # 1 of 11: 9 % < 10 %
    np.testing.assert_array_equal(rare.weight, 0.0)
    kept = episode_scores(['push'] * 11, [True] + [False] * 10, [50] * 11, [0.5] * 11,
                          OfflineRewardConfig(min_success_rate=0.0))
    assert kept.weight[0] > 1.0 > kept.weight[1] > 0.0


def test_grouping_by_seed_compares_the_runs_of_one_initial_state():
    # seed 0 ran at gamma 0.25 and 1.0, both succeeded; seed 1 at both, only the short window succeeded
    args = (['push'] * 4, [True, True, True, False], [60, 60, 80, 80], [0.25, 1.0, 0.25, 1.0])
    config = OfflineRewardConfig(reward='extension', group_by='seed')
    scores = episode_scores(*args, config, seeds=[0, 0, 1, 1])
    np.testing.assert_allclose(scores.reward, [1.25, 2.0, 1.25, 0.0])
    np.testing.assert_allclose(scores.advantage, [-1, 1, 1, -1], atol=1e-5)   # each pair standardized on its own
    by_task = episode_scores(*args, OfflineRewardConfig(reward='extension'))
    assert by_task.weight[2] < by_task.weight[1] and scores.weight[2] == pytest.approx(scores.weight[1], rel=1e-5)
    with pytest.raises(ValueError, match='group_by seed needs a known seed'):
        episode_scores(*args, config, seeds=[0, 0, -1, -1])
