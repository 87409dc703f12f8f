"""Demonstration operators, episode bags (rosbag2 MCAP) and the training-window dataset."""
import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from policytrim_ros.data import BagError, Episode, read_episode_bag, typestore, write_episode_bag
from policytrim_ros.data.bag import COMMAND_TOPIC, IMAGE_TOPIC, JOINT_STATES_TOPIC, TOPIC_TYPES
from policytrim_ros.data.collect import collect_demonstrations, collect_episode
from policytrim_ros.data.dataset import BagWarning, ChunkDataset
from policytrim_ros.data.salvage import salvage_episode_bag
from policytrim_ros.envs import ArmEnv, EnvConfig
from policytrim_ros.envs.operators import OPERATOR_STYLES, TeleopConfig, make_operator
from policytrim_ros.robots.arm import JOINT_NAMES

SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope='module')
def reach_episodes(env):
    """{style: [Episode per seed]} of the short reach task (about 20-30 steps each)."""
    return {style: [collect_episode(env, make_operator(style), 'reach', seed, max_steps=60) for seed in SEEDS]
            for style in OPERATOR_STYLES}


def assert_same_episode(a: Episode, b: Episode) -> None:
    for name in ('images', 'joint_positions', 'actions', 'call_index'):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_allclose(a.times, b.times, rtol=0, atol=1e-9)
    for name in ('task', 'instruction', 'seed', 'style', 'success', 'control_dt', 'joint_names', 'cameras'):
        assert getattr(a, name) == getattr(b, name), name


# -- operators --------------------------------------------------------------------------------------
def test_teleop_replays_the_same_episode_for_the_same_seed(env, reach_episodes):
    again = collect_episode(env, make_operator('teleop'), 'reach', SEEDS[0], max_steps=60)
    assert_same_episode(again, reach_episodes['teleop'][0])
    other = reach_episodes['teleop'][1]
    assert other.steps != again.steps or not np.array_equal(other.actions, again.actions)


def test_teleop_is_longer_than_efficient_and_still_succeeds(reach_episodes):
    for style in OPERATOR_STYLES:
        assert all(e.success for e in reach_episodes[style]), style
    teleop = np.mean([e.steps for e in reach_episodes['teleop']])
    efficient = np.mean([e.steps for e in reach_episodes['efficient']])
    assert teleop > 1.1 * efficient


def test_teleop_dwells_at_the_start(reach_episodes):
    for episode in reach_episodes['teleop']:
        np.testing.assert_array_equal(episode.actions[1], episode.actions[0])  # dwell_steps >= 2
        np.testing.assert_array_equal(episode.actions[0], episode.joint_positions[0])


@pytest.mark.parametrize('field, value, rule', [
    ('dwell_steps', (5, 2), 'lo <= hi'),
    ('hesitation_probability', 1.5, 'in [0, 1]'),
    ('detour_steps', (0, 3), '1 <= lo'),
    ('detour_size', -0.1, 'in [0, 0.5]'),
])
def test_teleop_config_names_the_bad_field(field, value, rule):
    with pytest.raises(ValueError) as error:
        TeleopConfig(**{field: value})
    assert str(error.value).startswith(f'{field} ({value})') and rule in str(error.value)


def test_unknown_operator_style_suggests_one():
    with pytest.raises(ValueError, match="did you mean 'teleop'"):
        make_operator('teleopp')


# -- bags -------------------------------------------------------------------------------------------
def test_bag_round_trip_reproduces_the_episode(tmp_path, reach_episodes):
    for episode in (reach_episodes['efficient'][0], reach_episodes['teleop'][1]):
        path = write_episode_bag(episode, tmp_path / episode.style)
        assert_same_episode(read_episode_bag(path), episode)


def test_two_camera_episode_bags_one_image_topic_per_camera_and_reads_back_tiled(tmp_path):
    env = ArmEnv(EnvConfig(cameras=('scene_camera', 'wrist_camera'), image_width=48, image_height=40))
    try:
        episode = collect_episode(env, make_operator('efficient'), 'reach', 0, max_steps=5)
        scene_only = ArmEnv(EnvConfig(image_width=48, image_height=40))
        scene = scene_only.reset('reach', 0)
        scene_only.close()
    finally:
        env.close()
    assert episode.images.shape[1:] == (40, 96, 3) and episode.cameras == ('scene_camera', 'wrist_camera')
    np.testing.assert_array_equal(episode.images[0, :, :48], scene.image)   # the scene camera's tile first,
                                                                              # pixel noise and all
    assert not np.array_equal(episode.images[0, :, 48:], scene.image)       # then the wrist camera's
    path = write_episode_bag(episode, tmp_path / 'bag')
    store = typestore()
    with Reader(path) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        frames = {c.topic: store.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages()
                  if c.topic.endswith('image_raw')}
    assert topics == {**TOPIC_TYPES, '/camera2/image_raw': 'sensor_msgs/msg/Image'}
    assert {t: (m.header.frame_id, m.width) for t, m in frames.items()} == {
        IMAGE_TOPIC: ('scene_camera', 48), '/camera2/image_raw': ('wrist_camera', 48)}
    assert_same_episode(read_episode_bag(path), episode)


def test_env_rejects_unknown_or_repeated_cameras():
    with pytest.raises(ValueError, match="cameras \\['elbow_camera'\\] are not in the scene"):
        ArmEnv(EnvConfig(cameras=('scene_camera', 'elbow_camera')))
    with pytest.raises(ValueError, match='each once'):
        EnvConfig(cameras=('scene_camera', 'scene_camera'))


def test_bag_has_the_robot_topics_types_and_metadata(tmp_path, reach_episodes):
    episode = reach_episodes['teleop'][0]
    path = write_episode_bag(episode, tmp_path / 'bag')
    info = yaml.safe_load((path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['storage_identifier'] == 'mcap' and info['version'] == 8
    assert info['custom_data'] == {'task': 'reach', 'style': 'teleop', 'seed': '0', 'success': 'true',
                                   'control_dt': '0.1', 'steps': str(episode.steps), 'cameras': 'scene_camera'}
    store = typestore()
    with Reader(path) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == TOPIC_TYPES
        counts = {c.topic: c.msgcount for c in reader.connections}
        events = [store.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages()
                  if c.topic == '/episode/event']
        image = next(store.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages()
                     if c.topic == IMAGE_TOPIC)
    assert counts == {IMAGE_TOPIC: episode.steps, JOINT_STATES_TOPIC: episode.steps,
                      COMMAND_TOPIC: episode.steps, '/instruction': 1, '/episode/event': 2}
    assert [(e.event, e.step, e.task) for e in events] == [(0, 0, 'reach'), (1, episode.steps, 'reach')]
    assert events[0].instruction == episode.instruction
    assert image.encoding == 'rgb8' and (image.height, image.width) == episode.images.shape[1:3]


def test_custom_message_hash_matches_rosidl():
    from policytrim_ros.launcher import package_share
    generated = package_share() / 'msg' / 'EpisodeEvent.json'  # installed by rosidl (scripts/setup.sh)
    expected = json.loads(generated.read_text())['type_hashes'][0]['hash_string']
    assert typestore().hash_rihs01('policytrim_ros/msg/EpisodeEvent') == expected


def test_chunked_commands_expand_to_one_step_per_point(tmp_path, reach_episodes):
    episode = reach_episodes['efficient'][0]
    windows = dataclasses.replace(episode, style='policy', call_index=np.arange(episode.steps) // 4)
    path = write_episode_bag(windows, tmp_path / 'windows')
    store = typestore()
    with Reader(path) as reader:
        commands = [store.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages()
                    if c.topic == COMMAND_TOPIC]
    expected = [min(4, episode.steps - first) for first in range(0, episode.steps, 4)]
    assert [len(c.points) for c in commands] == expected
    assert_same_episode(read_episode_bag(path), windows)


def write_bag(path, commands, steps=6, with_images=True):
    """A hand-made "robot" bag: every 0.1 s a JointState (joints in another order plus an extra one;
    joint j at k + j/10 at step k) and a bgr8 image (pixel (k, 0, 100)); then ``commands`` as
    [(start s, [(time_from_start s, value of every joint)])]."""
    store = typestore()
    t = store.types
    topics = [JOINT_STATES_TOPIC, COMMAND_TOPIC, '/episode/event'] + ([IMAGE_TOPIC] if with_images else [])

    def header(seconds):
        ns = int(round(seconds * 1e9))
        stamp = t['builtin_interfaces/msg/Time'](sec=ns // 10**9, nanosec=ns % 10**9)
        return t['std_msgs/msg/Header'](stamp=stamp, frame_id='')

    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = {topic: writer.add_connection(topic, TOPIC_TYPES[topic], typestore=store) for topic in topics}

        def put(topic, seconds, msg):
            writer.write(conn[topic], int(round(seconds * 1e9)), store.serialize_cdr(msg, TOPIC_TYPES[topic]))

        put('/episode/event', 0.0, t[TOPIC_TYPES['/episode/event']](
            header=header(0.0), event=0, episode_id='x', task='reach', instruction='go', step=0))
        for k in range(steps):
            put(JOINT_STATES_TOPIC, k * 0.1, t['sensor_msgs/msg/JointState'](
                header=header(k * 0.1), name=['extra'] + list(reversed(JOINT_NAMES)),
                position=np.array([-1.0] + [k + j / 10 for j in reversed(range(7))]), velocity=np.zeros(0),
                effort=np.zeros(0)))
            if with_images:
                put(IMAGE_TOPIC, k * 0.1, t['sensor_msgs/msg/Image'](
                    header=header(k * 0.1), height=2, width=2, encoding='bgr8', is_bigendian=0, step=6,
                    data=np.tile(np.array([100, 0, k], np.uint8), 4)))
        for start, points in commands:
            put(COMMAND_TOPIC, start, t['trajectory_msgs/msg/JointTrajectory'](
                header=header(start), joint_names=list(JOINT_NAMES), points=[
                    t['trajectory_msgs/msg/JointTrajectoryPoint'](
                        positions=np.full(7, value), velocities=np.zeros(0), accelerations=np.zeros(0),
                        effort=np.zeros(0), time_from_start=t['builtin_interfaces/msg/Duration'](
                            sec=0, nanosec=int(round(tfs * 1e9)))) for tfs, value in points]))
    return path


def test_a_newer_command_replaces_the_rest_of_the_older_one(tmp_path):
    # a 4-point window at t=0 replaced at t=0.25 by a 3-point one: steps 0.0 0.1 0.2 | 0.25 0.35 0.45
    path = write_bag(tmp_path / 'replaced', [(0.0, [(0.1, 10.0), (0.2, 11.0), (0.3, 12.0), (0.4, 13.0)]),
                                             (0.25, [(0.1, 20.0), (0.2, 21.0), (0.3, 22.0)])])
    episode = read_episode_bag(path)
    np.testing.assert_allclose(episode.times, [0.0, 0.1, 0.2, 0.25, 0.35, 0.45], atol=1e-9)
    np.testing.assert_array_equal(episode.actions, np.repeat([[10], [11], [12], [20], [21], [22]], 7, axis=1))
    np.testing.assert_array_equal(episode.call_index, [0, 0, 0, 1, 1, 1])
    # the latest sensor data at or before each step (samples every 0.1 s); columns in JOINT_NAMES order
    sample = [0, 1, 2, 2, 3, 4]
    np.testing.assert_allclose(episode.joint_positions, [[k + j / 10 for j in range(7)] for k in sample])
    np.testing.assert_array_equal(episode.images[:, 0, 0], [[k, 0, 100] for k in sample])  # bgr8 -> rgb
    assert (episode.task, episode.instruction, episode.seed, episode.style) == ('reach', 'go', -1, 'recorded')
    assert episode.control_dt == pytest.approx(0.1) and not episode.success


def test_unreadable_bags_raise_bag_error(tmp_path, reach_episodes):
    path = write_episode_bag(reach_episodes['efficient'][0], tmp_path / 'bag')
    mcap = next(path.glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[:mcap.stat().st_size // 2])
    with pytest.raises(BagError, match='cannot read the bag'):
        read_episode_bag(path)
    with pytest.raises(BagError, match='no bag at'):
        read_episode_bag(tmp_path / 'missing')
    no_camera = write_bag(tmp_path / 'no_camera', [(0.0, [(0.1, 1.0)])], with_images=False)
    with pytest.raises(BagError, match="lacks the topics \\['/camera/image_raw'\\]"):
        read_episode_bag(no_camera)


def noisy_episode(steps=100, seed=0, style='teleop'):
    """A synthetic successful episode whose random (incompressible) images span several of the
    bag's 1 MiB MCAP chunks."""
    rng = np.random.default_rng(seed)
    positions = rng.normal(size=(steps, 7))
    return Episode(task='reach', instruction='reach the goal', seed=seed, style=style, success=True, control_dt=0.05,
                   joint_names=JOINT_NAMES, images=rng.integers(0, 256, (steps, 96, 96, 3), dtype=np.uint8),
                   joint_positions=positions, actions=positions + 0.01, times=np.arange(steps) * 0.05,
                   call_index=np.arange(steps))


def truncate_mcap(bag, keep):
    mcap = next(bag.glob('*.mcap'))
    data = mcap.read_bytes()
    mcap.write_bytes(data[:keep(data)])


def data_end(data):
    """Offset of the MCAP DataEnd record: what precedes it is every chunk (the summary and footer follow)."""
    return data.rindex(b'\x0f\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00')


def test_a_truncated_bag_yields_the_steps_its_intact_chunks_hold(tmp_path):
    episode = noisy_episode()
    # cut mid-recording: the first chunks hold a prefix of the steps, and no end event
    bag = write_episode_bag(episode, tmp_path / 'cut')
    truncate_mcap(bag, lambda data: len(data) // 2)
    with pytest.raises(BagError, match='cannot read the bag'):
        read_episode_bag(bag)
    prefix, note = salvage_episode_bag(bag)
    assert 0 < prefix.steps < episode.steps and not prefix.success   # the end event was lost with the rest
    assert f'recovered {prefix.steps} of the steps' in note and 'no end event' in note
    for name in ('images', 'joint_positions', 'actions'):
        np.testing.assert_array_equal(getattr(prefix, name), getattr(episode, name)[:prefix.steps], err_msg=name)
    assert (prefix.task, prefix.style, prefix.seed) == ('reach', 'teleop', 0)
    # cut after the last chunk (a recorder killed before it wrote the summary): the whole episode
    bag = write_episode_bag(episode, tmp_path / 'unfinished')
    truncate_mcap(bag, data_end)
    whole, note = salvage_episode_bag(bag)
    assert_same_episode(whole, episode)
    assert 'the whole episode' in note
    with pytest.raises(BagError, match='not an MCAP file'):
        salvage_episode_bag(write_garbage(tmp_path / 'garbage'))


def write_garbage(bag):
    bag.mkdir()
    (bag / 'garbage.mcap').write_bytes(b'\x00not an mcap file' * 100)
    (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: {version: 9, storage_identifier: mcap, '
                                       'relative_file_paths: [garbage.mcap], custom_data: {style: teleop}}\n')
    return bag


@pytest.fixture()
def damaged_demos(tmp_path):
    """A demos folder: 2 good bags, a bag without metadata.yaml, a truncated one and a garbage one."""
    root = tmp_path / 'demos'
    good = [write_episode_bag(noisy_episode(30, seed), root / 'reach' / f'teleop-{seed}') for seed in (0, 1)]
    orphan = write_episode_bag(noisy_episode(30, 2), root / 'reach' / 'teleop-2')
    (orphan / 'metadata.yaml').unlink()
    truncated = write_episode_bag(noisy_episode(100, 3), root / 'reach' / 'teleop-3')
    truncate_mcap(truncated, data_end)
    garbage = write_garbage(root / 'reach' / 'teleop-4')
    return root, good, orphan, truncated, garbage


def test_a_demos_folder_loads_every_usable_bag_and_reports_the_rest(damaged_demos):
    root, good, orphan, truncated, garbage = damaged_demos
    with pytest.warns(BagWarning) as caught:
        data = ChunkDataset(root, chunk_size=4)
    message = str(caught[0].message)
    assert 'skipped 1 of 5 bags' in message and str(garbage) in message and 'not an MCAP file' in message
    assert 'recovered 2' in message and str(orphan) in message and str(truncated) in message
    assert sorted(e.seed for e in data.episodes) == [0, 1, 2, 3]   # the orphan's metadata is in its .mcap
    assert len(data) == 30 + 30 + 30 + 100
    report = data.report
    assert (report.episodes, report.steps, len(report.skipped), len(report.recovered)) == (4, 190, 1, 2)
    assert report.skipped[0][0] == str(garbage)


def test_strict_loading_stops_at_the_first_unusable_bag(damaged_demos):
    root, good, orphan, truncated, garbage = damaged_demos
    with pytest.raises(BagError, match=f'{orphan}: no metadata.yaml'):
        ChunkDataset(root, chunk_size=4, strict=True)
    for bag in (orphan, garbage):
        shutil.rmtree(bag)
    with pytest.raises(BagError, match=f'cannot read the bag {truncated}'):
        ChunkDataset(root, chunk_size=4, strict=True)
    shutil.rmtree(truncated)
    assert len(ChunkDataset(root, chunk_size=4, strict=True)) == 60


# -- dataset ----------------------------------------------------------------------------------------
def test_dataset_windows_pad_and_mask_past_the_episode_end(tmp_path, reach_episodes):
    for style, episodes in reach_episodes.items():
        for e in episodes[:2]:
            write_episode_bag(e, tmp_path / e.episode_id)
    episodes = reach_episodes['efficient'][:2] + reach_episodes['teleop'][:2]
    data = ChunkDataset(tmp_path, chunk_size=8)
    assert len(data) == sum(e.steps for e in episodes)
    assert data.instructions() == [episodes[0].instruction]
    first = data[0]
    assert first['image'].shape == (96, 96, 3) and first['image'].dtype == np.uint8
    assert first['state'].shape == (7,) and first['state'].dtype == np.float32
    assert first['actions'].shape == (8, 7) and first['actions'].dtype == np.float32
    assert first['action_mask'].all() and first['instruction'] == episodes[0].instruction
    last = data[data.episodes[0].steps - 3]  # 3 steps left in the first episode
    np.testing.assert_array_equal(last['action_mask'], [True] * 3 + [False] * 5)
    final = data.episodes[0].actions[-1].astype(np.float32)
    np.testing.assert_array_equal(last['actions'][3:], np.tile(final, (5, 1)))
    stats = data.statistics()
    assert set(stats) == {'state_mean', 'state_std', 'delta_mean', 'delta_std', 'step_delta_std', 'action_min',
                          'action_max'}
    step_std = stats.pop('step_delta_std')
    assert step_std.shape == (8, 7) and (step_std > 0).all()
    arm = slice(0, 3)  # the joints reach moves most: the first target of a chunk lies closest to the state
    assert (step_std[0, arm] < step_std[-1, arm]).all() and (step_std[0, arm] < stats['delta_std'][arm]).all()
    actions = np.concatenate([e.actions for e in data.episodes])
    np.testing.assert_allclose(stats['action_min'], actions.min(0))
    np.testing.assert_allclose(data.statistics(action_offsets=False)['delta_mean'], actions.mean(0), rtol=1e-5)
    assert all(v.shape == (7,) and np.isfinite(v).all() for v in stats.values())
    assert (stats['delta_std'] > 0).all()
    windows = data.task_windows()
    assert list(windows) == ['reach'] and np.array_equal(windows['reach'], np.arange(len(data)))
    teleop_only = ChunkDataset(tmp_path, chunk_size=4, image_size=(48, 64), styles=['teleop'])
    assert len(teleop_only) == sum(e.steps for e in reach_episodes['teleop'][:2])
    assert teleop_only[0]['image'].shape == (48, 64, 3)


def test_dataset_holds_the_images_once(tmp_path, reach_episodes):
    """The episodes' images are views of the dataset's one array (a 3x demo set filled 13.5 GB of a
    23 GB machine when each episode kept its own copy)."""
    recorded = reach_episodes['teleop'][:3]
    for e in recorded:
        write_episode_bag(e, tmp_path / e.episode_id)
    data = ChunkDataset(tmp_path, chunk_size=4)
    start = 0
    for episode in data.episodes:
        assert episode.images.base is not None and np.shares_memory(episode.images, data[start]['image'])
        original = next(e for e in recorded if e.seed == episode.seed)
        np.testing.assert_array_equal(episode.images, original.images)
        np.testing.assert_array_equal(data[start + episode.steps - 1]['image'], original.images[-1])
        start += episode.steps
    assert start == len(data)


def test_collect_demonstrations_writes_bags_and_an_index(tmp_path):
    paths = collect_demonstrations(['reach'], 2, 'teleop', seed=10, out_dir=tmp_path, workers=2,
                                   max_steps=60, progress=False)
    assert paths == [tmp_path / 'reach' / 'teleop-10', tmp_path / 'reach' / 'teleop-11']
    index = json.loads((tmp_path / 'index.json').read_text())
    summary = index['teleop']['tasks']['reach']
    assert summary['episodes'] == 2 and summary['success_rate'] == 1.0 and summary['mean_steps'] > 0
    assert read_episode_bag(paths[0]).seed == 10
    with pytest.raises(FileExistsError, match='already exist'):
        collect_demonstrations(['reach'], 1, 'teleop', seed=10, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match='evaluation uses seeds from 1000'):
        collect_demonstrations(['reach'], 5, 'teleop', seed=998, out_dir=tmp_path, progress=False)


def test_data_modules_do_not_import_rclpy():
    code = ('import sys\nimport policytrim_ros.data.collect, policytrim_ros.data.dataset\n'
            'assert not [m for m in sys.modules if m.split(".")[0] == "rclpy"]\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
