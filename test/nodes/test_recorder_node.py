"""recorder_node over DDS: sim_node + policy_node (the scripted expert) + episode_runner run two
episodes; the recorder writes one bag per episode that read_episode_bag, rosbags and mcap read,
with the steps and inference calls of the episode's EpisodeStats and the ChunkStats policy_node
published for it."""
import subprocess

import numpy as np
import yaml
from mcap.reader import make_reader
from rclpy.qos import QoSProfile
from rosbags.rosbag2 import Reader

from policytrim_ros import launcher
from policytrim_ros.data.bag import CHUNK_STATS_TOPIC, read_episode_bag
from policytrim_ros.execution.metrics import read_jsonl
from policytrim_ros.launcher import NodeSpec
from policytrim_ros.msg import ChunkStats

from harness import node_log, wait_for

H, h = 16, 4


def test_recorder_writes_one_readable_bag_per_episode_with_its_chunk_provenance(tmp_path, harness, launch):
    params = launcher.package_share() / 'config' / 'sim.yaml'
    log, bags = tmp_path / 'episodes.jsonl', tmp_path / 'bags'
    published = harness.record(ChunkStats, 'policytrim/chunk_stats', QoSProfile(depth=1000))
    run = launch([NodeSpec('sim_node', [params]),
                  NodeSpec('policy_node', [params], {'execution.n_action_steps': h, 'execution.chunk_size': H,
                                                     'policy.backend': 'expert', 'episode.log_path': str(log)}),
                  NodeSpec('recorder_node', [params], {'recording.output_dir': str(bags)})])
    # the recorder has discovered policy_node's publishers (what is published before is lost)
    wait_for(lambda: all(f'{topic}: 1 publisher(s)' in node_log(tmp_path, 'recorder_node') for topic in
                         ('/policytrim/chunk_stats', '/arm_controller/joint_trajectory', '/camera2/image_raw')),
             60.0, 'the recorder to discover policy_node and sim_node')
    wait_for(lambda: harness.node.count_publishers('policytrim/chunk_stats'), 30.0, 'this harness to discover policy_node')
    runner = NodeSpec('episode_runner', [params], {
        'runner.tasks': ['reach'], 'runner.episodes_per_task': 2, 'runner.seed': 1000, 'runner.episode_timeout_s': 60.0})
    done = subprocess.run(runner.command(), env=launcher.ros_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ids = ['reach-000', 'reach-001']
    wait_for(lambda: all((bags / i / 'metadata.yaml').is_file() for i in ids), 30.0, 'both bags to close')
    codes = run.stop()
    assert codes['recorder_node'] == 0, node_log(tmp_path, 'recorder_node')[-3000:]
    assert sorted(p.name for p in bags.iterdir()) == ids      # one bag per episode, nothing else

    for stats in read_jsonl(log):
        path = bags / stats.episode_id
        episode = read_episode_bag(path)
        assert stats.success and episode.success
        assert episode.steps == stats.steps and len(np.unique(episode.call_index)) == stats.inference_calls
        assert episode.stats == stats
        assert episode.cameras == ('scene_camera', 'wrist_camera') and episode.images.shape[1:] == (96, 192, 3)
        # the provenance is what policy_node published for this episode, and matches the executed steps
        sent = [m for m in published if m.episode_id == stats.episode_id]
        assert [(c.call_index, c.first_step, c.last_step, c.n_action_steps, c.chunk_size, c.weights_version,
                 c.sampling_seed) for c in episode.calls] == \
            [(m.call_index, m.first_step, m.last_step, m.n_action_steps, m.chunk_size, m.weights_version,
              m.sampling_seed) for m in sent]
        assert [c.call_index for c in episode.calls] == list(range(stats.inference_calls))
        for call in episode.calls:
            steps = np.flatnonzero(episode.call_index == call.call_index)
            assert call.n_action_steps == call.last_step - call.first_step + 1 == h and call.chunk_size == H
            assert steps[0] == call.first_step and steps[-1] <= call.last_step   # success may cut the last window
            assert call.call_index == len(episode.calls) - 1 or steps[-1] == call.last_step
        custom = yaml.safe_load((path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
        assert custom['version'] == 8
        assert {k: custom['custom_data'][k] for k in ('episode_id', 'task', 'success', 'end_reason', 'steps',
                                                       'weights_version', 'sampling_seed', 'complete')} == \
            {'episode_id': stats.episode_id, 'task': 'reach', 'success': 'true', 'end_reason': 'success',
             'steps': str(stats.steps), 'weights_version': '0', 'sampling_seed': '-1', 'complete': 'true'}
        # rosbags and the mcap reader see the same messages
        with Reader(path) as reader:
            counts = {c.topic: c.msgcount for c in reader.connections if c.msgcount}
        with open(path / f'{stats.episode_id}.mcap', 'rb') as f:
            seen = {}
            for _, channel, _ in make_reader(f).iter_messages():
                seen[channel.topic] = seen.get(channel.topic, 0) + 1
        assert seen == counts and counts[CHUNK_STATS_TOPIC] == stats.inference_calls
        assert {'/camera/image_raw', '/camera2/image_raw', '/joint_states', '/arm_controller/joint_trajectory',
                '/episode/event', '/policytrim/episode_stats'} <= set(counts)
