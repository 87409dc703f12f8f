"""Export of episode bags to LeRobotDataset v3.0, read back with pyarrow and PyAV against the layout
rules, and the checker failing on deliberately broken copies."""
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from policytrim_ros.cli import main
from policytrim_ros.data.bag import write_episode_bag
from policytrim_ros.data.episode import Episode
from policytrim_ros.data.lerobot import export_lerobot
from policytrim_ros.data.lerobot_check import LeRobotFormatError, check_lerobot_dataset, decoded_frames
from policytrim_ros.robots.arm import JOINT_NAMES

CAMERAS = ('scene_camera', 'wrist_camera')
LENGTHS = {('reach', 0): 7, ('push', 1): 5, ('reach', 2): 4}


def tiny_episode(task, seed, steps):
    """Two 16x16 cameras whose frames are flat colours (they survive lossy video coding)."""
    rng = np.random.default_rng(seed)
    positions = rng.normal(size=(steps, 7))
    images = np.empty((steps, 16, 32, 3), np.uint8)
    for t in range(steps):
        images[t, :, :16] = 20 * t + 10
        images[t, :, 16:] = 200 - 20 * t
    return Episode(task=task, instruction=f'{task} it', seed=seed, style='policy', success=seed != 1, control_dt=0.05,
                   joint_names=JOINT_NAMES, images=images, joint_positions=positions, actions=positions + 0.1,
                   times=np.arange(steps) * 0.05, call_index=np.arange(steps) // 2, cameras=CAMERAS)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('lerobot')
    for (task, seed), steps in LENGTHS.items():
        write_episode_bag(tiny_episode(task, seed, steps), root / 'bags' / task / f'policy-{seed}')
    report = export_lerobot(root / 'bags', root / 'out')
    assert (report.episodes, report.frames, report.tasks, report.skipped) == (3, 16, 2, [])
    return root / 'out'


def test_export_writes_the_v3_layout_and_reads_back(dataset):
    info = check_lerobot_dataset(dataset)
    assert (info['codebase_version'], info['fps'], info['total_episodes'], info['total_frames']) == ('v3.0', 20, 3, 16)
    features = info['features']
    assert features['observation.state'] == {'dtype': 'float32', 'shape': [7], 'names': list(JOINT_NAMES)}
    assert features['observation.images.wrist_camera']['shape'] == [16, 16, 3]
    assert features['observation.images.wrist_camera']['info']['video.codec'] == 'av1'
    for path in ('meta/stats.json', 'meta/tasks.parquet', 'meta/episodes/chunk-000/file-000.parquet',
                 'data/chunk-000/file-000.parquet', 'videos/observation.images.scene_camera/chunk-000/file-000.mp4'):
        assert (dataset / path).is_file(), path
    data = pq.read_table(dataset / 'data/chunk-000/file-000.parquet')
    assert data.schema.field('timestamp').type == pa.float32() and data.schema.field('index').type == pa.int64()
    episodes = pq.read_table(dataset / 'meta/episodes/chunk-000/file-000.parquet').to_pylist()
    # bags are found sorted by path: push/policy-1, reach/policy-0, reach/policy-2
    assert [(e['task_name'], e['seed'], e['length'], e['success']) for e in episodes] == \
        [('push', 1, 5, False), ('reach', 0, 7, True), ('reach', 2, 4, True)]
    assert [(e['dataset_from_index'], e['dataset_to_index']) for e in episodes] == [(0, 5), (5, 12), (12, 16)]
    tasks = pq.read_table(dataset / 'meta/tasks.parquet')
    assert dict(zip(tasks.column('task').to_pylist(), tasks.column('task_index').to_pylist())) == \
        {'push it': 0, 'reach it': 1}
    assert json.loads(tasks.schema.metadata[b'pandas'])['index_columns'] == ['task']   # pandas reads task as the index
    np.testing.assert_array_equal(data.column('task_index').to_numpy(), [0] * 5 + [1] * 11)
    np.testing.assert_allclose(data.column('timestamp').to_numpy()[5:12], np.arange(7) / 20, atol=1e-7)
    state = np.stack(data.column('observation.state').to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(state[5:12], tiny_episode('reach', 0, 7).joint_positions, rtol=1e-6)
    np.testing.assert_array_equal(data.column('chunk.call_index').to_numpy()[:5], [0, 0, 1, 1, 2])
    # every camera's video holds the 16 frames; reach seed 0's third frame (global frame 7) is its colour
    assert decoded_frames(dataset / 'videos/observation.images.scene_camera/chunk-000/file-000.mp4') == (16, (16, 16, 3))
    import av
    with av.open(str(dataset / 'videos/observation.images.wrist_camera/chunk-000/file-000.mp4')) as video:
        frames = [f.to_ndarray(format='rgb24') for f in video.decode(video=0)]
    assert abs(float(frames[7].mean()) - (200 - 20 * 2)) < 4 and abs(float(frames[0].mean()) - 200) < 4
    stats = json.loads((dataset / 'meta/stats.json').read_text())
    assert len(stats['action']['mean']) == 7 and np.shape(stats['observation.images.scene_camera']['mean']) == (3, 1, 1)


def rewrite(table_path, column, values):
    table = pq.read_table(table_path)
    index = table.column_names.index(column)
    pq.write_table(table.set_column(index, table.schema.field(column), pa.array(values, table.schema.field(column).type)),
                   table_path)


@pytest.mark.parametrize('breakage, message', [
    ('timestamps', 'timestamp is not frame_index / fps'),
    ('episode_ranges', 'do not follow at'),
    ('short_video', 'decodes to 15 frames; its episodes claim 16'),
    ('info_dtype', 'data column action is fixed_size_list'),
    ('unknown_task', 'task_index values [5] are not in tasks.parquet'),
])
def test_a_broken_dataset_fails_the_check(dataset, tmp_path, breakage, message):
    broken = tmp_path / 'broken'
    shutil.copytree(dataset, broken)
    data = broken / 'data/chunk-000/file-000.parquet'
    if breakage == 'timestamps':
        rewrite(data, 'timestamp', np.arange(16, dtype=np.float32) / 20)   # global, not per episode
    elif breakage == 'episode_ranges':
        rewrite(broken / 'meta/episodes/chunk-000/file-000.parquet', 'dataset_from_index', [0, 4, 12])
    elif breakage == 'short_video':
        shutil.copy(broken / 'videos/observation.images.scene_camera/chunk-000/file-000.mp4', tmp_path / 'full.mp4')
        import av
        with av.open(str(tmp_path / 'full.mp4')) as source, \
                av.open(str(broken / 'videos/observation.images.scene_camera/chunk-000/file-000.mp4'), 'w') as out:
            stream = out.add_stream('libx264', rate=20)
            stream.width, stream.height, stream.pix_fmt = 16, 16, 'yuv420p'
            for i, frame in enumerate(source.decode(video=0)):
                if i < 15:
                    out.mux(stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format='rgb24'), format='rgb24')))
            out.mux(stream.encode())
    elif breakage == 'info_dtype':
        info = json.loads((broken / 'meta/info.json').read_text())
        info['features']['action']['dtype'] = 'float64'
        (broken / 'meta/info.json').write_text(json.dumps(info))
    else:
        rewrite(data, 'task_index', [5] + [0] * 4 + [1] * 11)
    with pytest.raises(LeRobotFormatError, match='breaks the LeRobotDataset v3.0 layout') as error:
        check_lerobot_dataset(broken)
    assert message in str(error.value)


def test_cli_exports_and_refuses_to_write_over_a_dataset(dataset, tmp_path, capsys):
    bags = dataset.parent / 'bags'
    assert main(['export-lerobot', str(bags / 'reach'), str(tmp_path / 'reach'), '--codec', 'libx264']) == 0
    assert 'wrote 2 episodes, 11 frames, 1 tasks' in capsys.readouterr().out
    info = check_lerobot_dataset(tmp_path / 'reach')
    assert info['features']['observation.images.scene_camera']['info']['video.codec'] == 'h264'
    assert main(['export-lerobot', str(bags), str(tmp_path / 'reach')]) == 1
    assert 'is not empty' in capsys.readouterr().err
