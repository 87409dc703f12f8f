"""EpisodeRecorder (data/recording.py) on hand-made message streams: one bag per episode that the
project's reader, rosbags and mcap read; late and reordered messages; preemption; a crash.

The streams are what sim_node and policy_node publish for a 2-joint arm at 0.1 s per step, with
windows of h = 2: START, then per call a JointTrajectory and its ChunkStats, an image and a joint
state per step, SUCCESS, the hold, EpisodeStats.
"""
import shutil

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from rosbags.rosbag2 import Reader

from policytrim_ros.data.bag import (CHUNK_STATS_TOPIC, COMMAND_TOPIC, EPISODE_STATS_TOPIC, EVENT_TOPIC,
                                     IMAGE_TOPIC, INSTRUCTION_TOPIC, JOINT_STATES_TOPIC, PROVENANCE_TOPIC_TYPES,
                                     TOPIC_TYPES, UnreadableBagError, LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS,
                                     read_episode_bag, typestore)
from policytrim_ros.data.recording import EpisodeRecorder, RecordedTopic, RecordingConfig, bag_name
from policytrim_ros.data.salvage import salvage_episode_bag

DT, H, JOINTS = 0.1, 2, ['j1', 'j2']
ROLES = {IMAGE_TOPIC: 'camera', JOINT_STATES_TOPIC: 'observation', INSTRUCTION_TOPIC: 'observation',
         COMMAND_TOPIC: 'command', EVENT_TOPIC: 'event', CHUNK_STATS_TOPIC: 'chunk_stats',
         EPISODE_STATS_TOPIC: 'episode_stats'}
QOS = {IMAGE_TOPIC: SENSOR_QOS, JOINT_STATES_TOPIC: SENSOR_QOS, EVENT_TOPIC: LATCHED_QOS}
TYPES = {**TOPIC_TYPES, **PROVENANCE_TOPIC_TYPES}
TOPICS = [RecordedTopic(t, TYPES[t], role, QOS.get(t, RELIABLE_QOS)) for t, role in ROLES.items()]


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


class Stream:
    """Serialized messages of the sim and policy node, fed to a recorder at sim time ``t``."""

    def __init__(self, recorder):
        self.recorder, self.store, self.t = recorder, typestore(), 0.0

    def put(self, topic, t, stamp=None, **fields):
        """Publish at ``t`` (the log time; both 10 s into the clock), stamped ``stamp`` (default ``t``;
        0 = unset: a JTC command's "start now")."""
        ns = int(round((t + 10.0) * 1e9))
        types = self.store.types
        if 'header' in types[TYPES[topic]].__dataclass_fields__:
            stamped = ns if stamp is None else int(round((stamp + 10.0) * 1e9)) if stamp else 0
            stamp = types['builtin_interfaces/msg/Time'](sec=stamped // 10**9, nanosec=stamped % 10**9)
            fields['header'] = types['std_msgs/msg/Header'](stamp=stamp, frame_id=fields.pop('frame_id', ''))
        msg = types[TYPES[topic]](**fields)
        self.recorder.write(topic, bytes(self.store.serialize_cdr(msg, TYPES[topic])), ns)

    def observe(self, t, value):
        self.put(IMAGE_TOPIC, t, frame_id='scene_camera', height=1, width=1, encoding='rgb8', is_bigendian=0,
                 step=3, data=np.full(3, int(value * 10) % 256, np.uint8))
        self.put(JOINT_STATES_TOPIC, t, name=JOINTS, position=np.full(2, value), velocity=np.zeros(0),
                 effort=np.zeros(0))

    def event(self, t, episode_id, kind, step=0):
        self.put(EVENT_TOPIC, t, event=kind, episode_id=episode_id, task='reach', instruction='reach the goal',
                 step=step)

    def window(self, t, points, stamp=None):
        types = self.store.types
        self.put(COMMAND_TOPIC, t, stamp, joint_names=JOINTS, points=[
            types['trajectory_msgs/msg/JointTrajectoryPoint'](
                positions=np.full(2, value), velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
                time_from_start=types['builtin_interfaces/msg/Duration'](sec=0, nanosec=int(round((k + 1) * DT * 1e9))))
            for k, value in enumerate(points)])

    def chunk_stats(self, t, episode_id, call, first, last, version=3, seed=11):
        self.put(CHUNK_STATS_TOPIC, t, episode_id=episode_id, call_index=call, chunk_size=8, n_action_steps=last - first + 1,
                 first_step=first, last_step=last, inference_latency_s=0.01, weights_version=version,
                 sampling_seed=seed)

    def episode_stats(self, t, episode_id, steps, calls, success=True, end_reason='success'):
        self.put(EPISODE_STATS_TOPIC, t, episode_id=episode_id, task='reach', instruction='reach the goal',
                 success=success, steps=steps, inference_calls=calls, n_action_steps=H, chunk_size=8,
                 chunk_utilization=H / 8, wall_clock_s=1.0, end_reason=end_reason, weights_version=3,
                 sampling_seed=11)

    def episode(self, episode_id, t0, calls=2, stats=True, reorder=False):
        """START, ``calls`` windows of H steps, SUCCESS, a hold, EpisodeStats (``reorder``: the last
        ChunkStats after it); returns the time after the episode."""
        self.observe(t0, 0.0)                   # the sim publishes the reset scene before START
        self.event(t0, episode_id, 0)
        t = t0
        for call in range(calls):
            self.window(t, [call * H + k + 1.0 for k in range(H)])
            if not (reorder and call == calls - 1):
                self.chunk_stats(t, episode_id, call, call * H, call * H + H - 1)
            for _ in range(H):
                t += DT
                self.observe(t, t - t0)
        self.event(t, episode_id, 1, step=calls * H)
        self.window(t, [0.0], stamp=0.0)        # the hold: one point, stamp 0 (= log time)
        if stats:
            self.episode_stats(t, episode_id, calls * H, calls)
        if reorder:
            self.chunk_stats(t, episode_id, calls - 1, (calls - 1) * H, calls * H - 1)
        return t + DT


@pytest.fixture
def recording(tmp_path):
    clock = Clock()
    lines = []
    recorder = EpisodeRecorder(RecordingConfig(output_dir=str(tmp_path / 'bags'), grace_s=0.5, flush_period_s=0.0,
                                               control_dt=DT), TOPICS, clock=clock, log=lines.append)
    return recorder, Stream(recorder), clock, lines


def test_each_episode_gets_its_own_bag_with_its_calls_and_stats(recording, tmp_path):
    recorder, stream, clock, _ = recording
    t = stream.episode('reach-000', 0.0)
    clock.now = 1.0
    recorder.poll()
    stream.observe(t, 9.0)                      # between episodes: in no bag
    stream.episode('reach-001', t + 1.0, calls=3)
    recorder.close()
    assert [p.name for p in recorder.finished] == ['reach-000', 'reach-001']
    for path, calls in zip(recorder.finished, (2, 3)):
        episode = read_episode_bag(path)
        assert episode.steps == calls * H and episode.success
        assert np.array_equal(episode.call_index, np.repeat(np.arange(calls), H))
        assert np.array_equal(episode.actions[:, 0], np.arange(calls * H) + 1.0)
        assert episode.cameras == ('scene_camera',) and episode.control_dt == DT
        assert [(c.call_index, c.first_step, c.last_step, c.n_action_steps) for c in episode.calls] == \
            [(k, k * H, k * H + H - 1, H) for k in range(calls)]
        assert episode.stats.steps == calls * H and episode.stats.inference_calls == calls
        assert {c.weights_version for c in episode.calls} == {3} and episode.stats.sampling_seed == 11
        custom = yaml.safe_load((path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']['custom_data']
        assert custom == {'episode_id': path.name, 'style': 'policy', 'complete': 'true',
                          'inference_calls_recorded': str(calls), 'cameras': 'scene_camera', 'task': 'reach',
                          'instruction': 'reach the goal', 'success': 'true', 'end_reason': 'success',
                          'steps': str(calls * H), 'inference_calls': str(calls), 'weights_version': '3',
                          'sampling_seed': '11', 'control_dt': '0.1'}
    # the second bag's pre-roll: the latest observation before its START (taken between the
    # episodes), then the START scene; none of the first episode's
    with Reader(recorder.finished[1]) as reader:
        joints = [typestore().deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages()
                  if c.topic == JOINT_STATES_TOPIC]
    assert [j.position[0] for j in joints[:2]] == [9.0, 0.0] and len(joints) == 3 * H + 2


def test_bags_read_with_rosbags_and_mcap(recording):
    recorder, stream, clock, _ = recording
    stream.episode('reach-000', 0.0)
    recorder.close()
    path = recorder.finished[0]
    with Reader(path) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    info = yaml.safe_load((path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['version'] == 8 and info['storage_identifier'] == 'mcap'
    assert all(isinstance(t['topic_metadata']['offered_qos_profiles'], str)   # as Humble reads them
               for t in info['topics_with_message_count'])
    assert counts == {IMAGE_TOPIC: 5, JOINT_STATES_TOPIC: 5, INSTRUCTION_TOPIC: 0, COMMAND_TOPIC: 3,
                      EVENT_TOPIC: 2, CHUNK_STATS_TOPIC: 2, EPISODE_STATS_TOPIC: 1}
    with open(path / 'reach-000.mcap', 'rb') as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()} == \
            {t.name: t.msgtype for t in TOPICS}
        seen = mcap_message_counts(reader)
    assert seen == {t: n for t, n in counts.items() if n}


def mcap_message_counts(reader):
    seen = {}
    for _, channel, message in reader.iter_messages():
        assert message.data   # the CDR bytes as received
        seen[channel.topic] = seen.get(channel.topic, 0) + 1
    return seen


def test_late_and_reordered_messages_within_the_grace_period_go_to_their_episode(recording):
    recorder, stream, clock, lines = recording
    t = stream.episode('reach-000', 0.0, reorder=True)    # its last ChunkStats after its EpisodeStats
    stream.episode('reach-001', t)                        # starts within reach-000's grace period
    clock.now = 1.0
    recorder.poll()                                       # both past the grace: closed
    stream.chunk_stats(t + 1.0, 'reach-000', 2, 4, 5)     # after the grace: counted, written nowhere
    recorder.close()
    assert [read_episode_bag(p).calls[-1].call_index for p in recorder.finished] == [1, 1]
    assert recorder.late == {'reach-000': 1}
    assert any('closed' in line and 'reach-000' in line and '(complete)' in line for line in lines)


def test_a_backlog_that_delivers_the_stats_before_the_images_still_splits_by_stamp(recording):
    """A recorder that falls behind takes one message per topic per wake-up (rclpy's executor):
    a short episode's EpisodeStats, and the next START, can come before its images and commands."""
    recorder, stream, clock, _ = recording
    queued = []
    stream.recorder = type('Queue', (), {'write': lambda self, *message: queued.append(message)})()
    t = stream.episode('reach-000', 0.0)
    stream.episode('reach-001', t + 0.5)
    keyed = (EVENT_TOPIC, CHUNK_STATS_TOPIC, EPISODE_STATS_TOPIC)
    for message in [m for m in queued if m[0] in keyed] + [m for m in queued if m[0] not in keyed]:
        recorder.write(*message)
    recorder.close()
    episodes = [read_episode_bag(p) for p in recorder.finished]
    assert [(e.steps, len(e.calls), e.success) for e in episodes] == [(4, 2, True), (4, 2, True)]
    assert [e.actions[:, 0].tolist() for e in episodes] == [[1.0, 2.0, 3.0, 4.0]] * 2


def test_a_preempted_episode_keeps_its_stats_and_the_next_one_its_stream(recording):
    recorder, stream, clock, _ = recording
    stream.observe(0.0, 0.0)
    stream.event(0.0, 'a', 0)
    stream.window(0.0, [1.0, 2.0])
    stream.chunk_stats(0.0, 'a', 0, 0, 1)
    stream.observe(0.1, 0.1)
    t = stream.episode('b', 0.2)                          # START b before a's EpisodeStats
    stream.episode_stats(t, 'a', 1, 1, success=False, end_reason='preempted')
    recorder.close()
    a, b = (read_episode_bag(p) for p in recorder.finished)
    assert (a.stats.end_reason, a.steps, len(a.calls)) == ('preempted', 1, 1) and not a.success
    assert (b.steps, len(b.calls), b.success) == (4, 2, True)


def test_an_episode_started_without_a_start_event_opens_on_its_first_chunk_stats(recording):
    recorder, stream, clock, _ = recording
    stream.put(INSTRUCTION_TOPIC, 0.0, data='reach the goal')
    stream.observe(0.0, 0.0)
    stream.window(0.0, [1.0, 2.0])                        # the window may arrive before its ChunkStats
    stream.chunk_stats(0.0, 'policy_node-0001', 0, 0, 1)
    stream.observe(0.1, 0.1)
    stream.observe(0.2, 0.2)
    stream.window(0.2, [0.0], stamp=0.0)                  # the hold after the step limit
    stream.episode_stats(0.2, 'policy_node-0001', 2, 1, success=False, end_reason='max_steps')
    recorder.close()
    episode = read_episode_bag(recorder.finished[0])
    assert recorder.finished[0].name == 'policy_node-0001'
    assert (episode.steps, episode.instruction, episode.success) == (2, 'reach the goal', False)


def test_a_step_limit_episode_has_the_steps_policy_node_counted_and_its_windows_from_chunk_stats(recording):
    from policytrim_ros.data.executed import read_policy_bag
    recorder, stream, clock, _ = recording
    stream.observe(0.0, 0.0)
    stream.event(0.0, 'reach-000', 0)
    t = 0.0
    for call in range(2):
        stream.window(t, [call * H + k + 1.0 for k in range(H)])
        stream.chunk_stats(t, 'reach-000', call, call * H, call * H + H - 1)
        for _ in range(H):
            t += DT
            stream.observe(t, t)
    stream.window(t, [0.0], stamp=0.0)          # the hold at the step limit: no end event, then the stats
    stream.episode_stats(t, 'reach-000', 2 * H, 2, success=False, end_reason='max_steps')
    recorder.close()
    recorded = read_policy_bag(recorder.finished[0])
    assert (recorded.episode.steps, recorded.episode.success, recorded.source) == (2 * H, False, 'chunk_stats')
    assert [(w.first_step, w.steps, w.n_action_steps) for w in recorded.windows] == [(0, H, H), (H, H, H)]
    assert read_episode_bag(recorder.finished[0]).steps == 2 * H


def test_a_failure_event_stamped_after_the_hold_leaves_the_hold_out_too(recording):
    from policytrim_ros.data.executed import read_policy_bag
    recorder, stream, clock, _ = recording
    stream.observe(0.0, 0.0)
    stream.event(0.0, 'reach-000', 0)
    stream.window(0.0, [k + 1.0 for k in range(H)])
    stream.chunk_stats(0.0, 'reach-000', 0, 0, H - 1)
    t = 0.0
    for _ in range(H):
        t += DT
        stream.observe(t, t)
    stream.window(t, [0.0], stamp=0.0)          # the hold at the step limit, then the environment's FAILURE
    stream.event(t + DT, 'reach-000', 2, step=H)
    stream.episode_stats(t + DT, 'reach-000', H, 1, success=False, end_reason='max_steps')
    recorder.close()
    recorded = read_policy_bag(recorder.finished[0])
    assert (recorded.episode.steps, recorded.episode.success, recorded.source) == (H, False, 'chunk_stats')


def test_a_crash_leaves_closed_bags_complete_and_the_running_one_salvageable(recording, tmp_path):
    recorder, stream, clock, _ = recording
    t = stream.episode('reach-000', 0.0)
    clock.now = 1.0
    recorder.poll()
    stream.observe(t, 0.0)
    stream.event(t, 'reach-001', 0)
    stream.window(t, [1.0, 2.0])
    stream.chunk_stats(t, 'reach-001', 0, 0, 1)
    for k in (1, 2):
        stream.observe(t + k * DT, k * DT)
    recorder.poll()                                       # flush_period_s 0: on disk now
    crashed = tmp_path / 'after-kill'
    shutil.copytree(recorder.output_dir, crashed)         # what kill -9 leaves: the files as they are now
    assert read_episode_bag(crashed / 'reach-000').steps == 4
    assert not (crashed / 'reach-001' / 'metadata.yaml').exists()
    with pytest.raises(UnreadableBagError):
        read_episode_bag(crashed / 'reach-001')
    episode, note = salvage_episode_bag(crashed / 'reach-001')
    assert episode.steps == 2 and not episode.success and 'no end event' in note
    assert [c.call_index for c in episode.calls] == [0]
    recorder.close()


def test_an_existing_bag_is_never_overwritten(recording):
    recorder, stream, clock, lines = recording
    (recorder.output_dir / 'reach-000').mkdir(parents=True)
    stream.episode('reach-000', 0.0)
    recorder.close()
    assert recorder.finished == [] and any('not recording episode reach-000' in line for line in lines)
    assert not any((recorder.output_dir / 'reach-000').iterdir())


@pytest.mark.parametrize('field, value, rule', [
    ('storage', 'mcapp', "did you mean 'mcap'"), ('compression', 'lz4', 'must be one of'),
    ('grace_s', -1.0, 'grace_s \\(-1.0\\) must be >= 0'), ('output_dir', '', 'must name a directory')])
def test_recording_config_names_the_bad_field(field, value, rule):
    with pytest.raises(ValueError, match=rule):
        RecordingConfig(**{field: value})
    with pytest.raises(ValueError, match='needs storage mcap'):
        RecordingConfig(storage='sqlite3', compression='zstd')


def test_bag_names_are_safe_directory_names():
    assert bag_name('reach-000') == 'reach-000'
    assert bag_name('pick/place 3') == 'pick_place_3'
    assert bag_name('../x') == '_x'
    assert bag_name('').startswith('episode-')
