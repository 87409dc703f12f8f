"""Episode bags -> a LeRobotDataset v3.0 directory (parquet with pyarrow, mp4 with PyAV), and a checker.

Layout (LeRobot 0.6 ``datasets/``; ``../shared/notes/policy-servers-and-datasets.md``)::

    meta/info.json                               codebase_version v3.0, fps, features, totals, path templates
    meta/stats.json                              per-feature min/max/mean/std/count and q01..q99
    meta/tasks.parquet                           task (the instruction; pandas index) <-> task_index
    meta/episodes/chunk-000/file-000.parquet     per episode: index, tasks, length, data and video locations,
                                                 from/to indices and timestamps, stats/*, and ours: success,
                                                 seed, style, task_name, bag
    data/chunk-000/file-000.parquet              per frame: timestamp (f32), frame_index, episode_index, index,
                                                 task_index (int64), observation.state, action (float32 lists),
                                                 chunk.call_index (int64: the inference call that produced the action)
    videos/observation.images.<camera>/chunk-000/file-000.mp4   all episodes concatenated

One frame per control step of the bag's episode (``data.bag`` already expanded the commands to one
step each, so frames are at a fixed rate: fps = 1 / control_dt, which must be a whole number and
the same for every episode); ``timestamp = frame_index / fps``. The LeRobot task is the
instruction (what a language-conditioned policy reads); our task name is kept per episode. Each
of the episode's cameras (``Episode.cameras``, tiled in the bag) becomes its own video key. All
episodes go to one data file and one video file per camera: the 100 MB / 200 MB file sizes of
``info.json`` are recorded, not enforced (a few hundred 96 x 96 episodes take a few MB).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from policytrim_ros.data.bag import BagError, read_episode_bag
from policytrim_ros.data.dataset import find_bags
from policytrim_ros.data.episode import Episode
from policytrim_ros.data.lerobot_check import (CODEBASE_VERSION, DATA_PATH, EPISODES_PATH, INDEX_FEATURES, TASKS_PATH,
                                               VIDEO_PATH, check_lerobot_dataset)

CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
CODECS = {'libsvtav1': 'av1', 'libx264': 'h264'}
"""Encoder -> the codec name info.json records (LeRobot's default is AV1 by SVT-AV1)."""


@dataclass
class ExportReport:
    """What an export wrote: episodes, frames, tasks, and (bag, why) of the bags it skipped."""

    episodes: int = 0
    frames: int = 0
    tasks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _location(template: str, **keys) -> str:
    return template.format(chunk_index=0, file_index=0, **keys)


def _fps(episodes: Sequence[Episode]) -> int:
    rates = {round(1.0 / e.control_dt, 6) for e in episodes}
    if len(rates) != 1:
        raise ValueError(f'episodes run at different control rates {sorted(rates)} Hz; a dataset has one fps')
    rate = rates.pop()
    if abs(rate - round(rate)) > 1e-6:
        raise ValueError(f'the control rate {rate} Hz is not a whole number of frames per second (LeRobot fps is an int)')
    return int(round(rate))


def _camera_keys(episode: Episode) -> list[str]:
    return [f'observation.images.{c}' for c in (episode.cameras or ('camera',))]


def _stats(values: np.ndarray) -> dict[str, list]:
    """LeRobot's per-feature statistics over axis 0 of (N, ...) values."""
    values = values.astype(np.float64)
    out = {'min': values.min(0), 'max': values.max(0), 'mean': values.mean(0), 'std': values.std(0)}
    out.update({f'q{round(q * 100):02d}': np.quantile(values, q, axis=0) for q in QUANTILES})
    return {**{k: np.asarray(v).tolist() for k, v in out.items()}, 'count': [int(len(values))]}


def _image_stats(frames: np.ndarray) -> dict[str, list]:
    """Per-channel statistics of (N, h, w, 3) uint8 frames in [0, 1], shaped (3, 1, 1) as LeRobot's."""
    channels = frames.reshape(-1, 3).astype(np.float64) / 255.0
    return {k: (np.asarray(v)[:, None, None].tolist() if k != 'count' else [len(frames)])
            for k, v in _stats(channels).items()}


def _open_video(path: Path, fps: int, height: int, width: int, codec: str):
    import av
    os.environ.setdefault('SVT_LOG', '1')   # SVT-AV1 prints its whole configuration to stderr otherwise (read once)
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), mode='w')
    options = {'crf': '30', 'g': '2', 'preset': '12'} if codec == 'libsvtav1' else {'crf': '23', 'g': '2'}
    stream = container.add_stream(codec, rate=fps, options=options)
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    stream.time_base = Fraction(1, fps)
    return container, stream


def _encode(container, stream, frames: np.ndarray, first_pts: int) -> None:
    import av
    for i, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format='rgb24')
        frame.pts = first_pts + i
        container.mux(stream.encode(frame))


def _pandas_index_metadata(index: str, columns: list[tuple[str, str, str]]) -> bytes:
    """The schema metadata pandas writes, naming ``index`` the DataFrame index (LeRobot reads
    tasks.parquet with pandas and looks tasks up by that index); columns: (name, pandas, numpy type)."""
    import pyarrow
    return json.dumps({
        'index_columns': [index], 'column_indexes': [{'name': None, 'field_name': None, 'pandas_type': 'unicode',
                                                      'numpy_type': 'object', 'metadata': {'encoding': 'UTF-8'}}],
        'columns': [{'name': n, 'field_name': n, 'pandas_type': p, 'numpy_type': t, 'metadata': None}
                    for n, p, t in columns],
        'creator': {'library': 'pyarrow', 'version': pyarrow.__version__}, 'pandas_version': '2.2.3'}).encode()


def export_lerobot(bags: str | Path | Sequence[str | Path], out: str | Path, robot_type: str = 'policytrim_arm',
                   codec: str = 'libsvtav1', strict: bool = False) -> ExportReport:
    """Write the episodes of every bag under ``bags`` as a LeRobotDataset v3.0 at ``out`` (which
    must not exist or be empty); check it (``check_lerobot_dataset``) and return what was written.

    codec: 'libsvtav1' (AV1, LeRobot's default) or 'libx264' (H.264). strict: raise BagError at the
    first bag that yields no episode instead of skipping it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    if codec not in CODECS:
        raise ValueError(f"codec '{codec}' must be one of {sorted(CODECS)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f'{out} is not empty; a dataset is never written over another')
    report = ExportReport()
    paths = []
    for root in ([bags] if isinstance(bags, (str, Path)) else bags):
        root = Path(root)
        paths += find_bags(root) if root.is_dir() else [root]
    episodes, sources = [], []
    for path in paths:
        try:
            episodes.append(read_episode_bag(path))
            sources.append(str(path))
        except BagError as err:
            if strict:
                raise
            report.skipped.append((str(path), str(err)))
    if not episodes:
        raise ValueError(f'no episode in the {len(paths)} bags under {bags}')
    fps = _fps(episodes)
    first = episodes[0]
    setups = {(e.joint_names, tuple(_camera_keys(e)), e.images.shape[1:]) for e in episodes}
    if len(setups) != 1:
        raise ValueError(f'episodes differ in joints, cameras or image size ({len(setups)} setups); '
                         'a dataset holds one robot setup')
    names = list(first.joint_names)
    keys = _camera_keys(first)
    height, width = first.images.shape[1], first.images.shape[2] // len(keys)
    tasks = sorted({e.instruction for e in episodes})
    task_index = {t: i for i, t in enumerate(tasks)}
    videos = {key: _open_video(out / _location(VIDEO_PATH, video_key=key), fps, height, width, codec) for key in keys}
    columns: dict[str, list] = {k: [] for k in (*INDEX_FEATURES, 'observation.state', 'action', 'chunk.call_index')}
    rows = []
    image_samples: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    start = 0
    try:
        for e_index, (episode, source) in enumerate(zip(episodes, sources)):
            n = episode.steps
            frame_index = np.arange(n)
            columns['timestamp'].append((frame_index / fps).astype(np.float32))
            columns['frame_index'].append(frame_index)
            columns['episode_index'].append(np.full(n, e_index))
            columns['index'].append(start + frame_index)
            columns['task_index'].append(np.full(n, task_index[episode.instruction]))
            columns['observation.state'].append(episode.joint_positions.astype(np.float32))
            columns['action'].append(episode.actions.astype(np.float32))
            columns['chunk.call_index'].append(episode.call_index.astype(np.int64))
            row = {'episode_index': e_index, 'tasks': [episode.instruction], 'length': n,
                   'data/chunk_index': 0, 'data/file_index': 0,
                   'dataset_from_index': start, 'dataset_to_index': start + n,
                   'meta/episodes/chunk_index': 0, 'meta/episodes/file_index': 0,
                   'success': episode.success, 'seed': episode.seed, 'style': episode.style,
                   'task_name': episode.task, 'bag': source}
            for i, key in enumerate(keys):
                tiles = episode.images[:, :, i * width:(i + 1) * width]
                _encode(*videos[key], tiles, start)
                row.update({f'videos/{key}/chunk_index': 0, f'videos/{key}/file_index': 0,
                            f'videos/{key}/from_timestamp': start / fps, f'videos/{key}/to_timestamp': (start + n) / fps})
                image_samples[key].append(tiles[::max(1, n // 10)])   # about 10 frames per episode for the stats
            for feature, values in (('observation.state', episode.joint_positions), ('action', episode.actions)):
                for stat, value in _stats(values).items():
                    row[f'stats/{feature}/{stat}'] = value
            rows.append(row)
            start += n
    finally:
        for container, stream in videos.values():
            container.mux(stream.encode())   # flush the encoder
            container.close()
    data = {k: np.concatenate(v) for k, v in columns.items()}
    table = pa.table({**{k: pa.array(data[k], pa.float32() if k == 'timestamp' else pa.int64())
                         for k in (*INDEX_FEATURES, 'chunk.call_index')},
                      'observation.state': pa.FixedSizeListArray.from_arrays(data['observation.state'].ravel(), len(names)),
                      'action': pa.FixedSizeListArray.from_arrays(data['action'].ravel(), len(names))})
    (out / 'data' / 'chunk-000').mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / _location(DATA_PATH))
    (out / 'meta' / 'episodes' / 'chunk-000').mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out / _location(EPISODES_PATH))
    tasks_table = pa.table({'task_index': pa.array(range(len(tasks)), pa.int64()), 'task': pa.array(tasks, pa.string())})
    tasks_table = tasks_table.replace_schema_metadata({b'pandas': _pandas_index_metadata(
        'task', [('task_index', 'int64', 'int64'), ('task', 'unicode', 'object')])})
    pq.write_table(tasks_table, out / TASKS_PATH)
    scalar = {'shape': [1], 'names': None}
    features = {'timestamp': {'dtype': 'float32', **scalar},
                **{k: {'dtype': 'int64', **scalar} for k in INDEX_FEATURES[1:]},
                'observation.state': {'dtype': 'float32', 'shape': [len(names)], 'names': names},
                'action': {'dtype': 'float32', 'shape': [len(names)], 'names': names},
                'chunk.call_index': {'dtype': 'int64', **scalar}}
    for key in keys:
        features[key] = {'dtype': 'video', 'shape': [height, width, 3], 'names': ['height', 'width', 'channels'],
                         'info': {'video.height': height, 'video.width': width, 'video.codec': CODECS[codec],
                                  'video.pix_fmt': 'yuv420p', 'video.is_depth_map': False, 'video.fps': fps,
                                  'video.channels': 3, 'has_audio': False}}
    info = {'codebase_version': CODEBASE_VERSION, 'robot_type': robot_type,
            'total_episodes': len(episodes), 'total_frames': int(start), 'total_tasks': len(tasks),
            'chunks_size': CHUNKS_SIZE, 'data_files_size_in_mb': DATA_FILES_SIZE_IN_MB,
            'video_files_size_in_mb': VIDEO_FILES_SIZE_IN_MB, 'fps': fps, 'splits': {'train': f'0:{len(episodes)}'},
            'data_path': DATA_PATH, 'video_path': VIDEO_PATH, 'features': features}
    (out / 'meta' / 'info.json').write_text(json.dumps(info, indent=4) + '\n')
    stats = {k: _stats(data[k].reshape(len(data[k]), -1)) for k in (*INDEX_FEATURES, 'observation.state', 'action',
                                                                     'chunk.call_index')}
    stats.update({key: _image_stats(np.concatenate(image_samples[key])) for key in keys})
    (out / 'meta' / 'stats.json').write_text(json.dumps(stats, indent=4) + '\n')
    report.episodes, report.frames, report.tasks = len(episodes), int(start), len(tasks)
    check_lerobot_dataset(out)
    return report
