"""Check a directory against the LeRobotDataset v3.0 layout rules (what LeRobot 0.6's loader relies on).

``check_lerobot_dataset(root)`` reads the dataset back with pyarrow and PyAV and raises
LeRobotFormatError listing every rule it breaks:

- meta/info.json: codebase_version v3.0, an int fps > 0, the path templates, totals, and features
  with dtype, shape and names, including the five index features with their dtypes;
- data parquet: exactly the non-video features as columns, in their dtypes and shapes; index =
  0..N-1 in order; per episode frame_index = 0..length-1 and timestamp = frame_index / fps;
  task_index values that meta/tasks.parquet defines; N = total_frames;
- meta/tasks.parquet: task_index 0..T-1, distinct task strings, T = total_tasks;
- meta/episodes: episode_index 0..E-1, contiguous [dataset_from_index, dataset_to_index) ranges of
  the episode's length covering the data in order, data rows carrying that episode_index, the
  episode's tasks in tasks.parquet; E = total_episodes;
- videos: for each video feature, each episode's file exists, its from/to timestamps are its
  frame range / fps, the decoded frame count of each file equals the frames its episodes claim,
  and the frames have the feature's shape;
- meta/stats.json: min/max/mean/std for each non-video feature, of the feature's size.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CODEBASE_VERSION = 'v3.0'
DATA_PATH = 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
VIDEO_PATH = 'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4'
EPISODES_PATH = 'meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
TASKS_PATH = 'meta/tasks.parquet'
INDEX_FEATURES = ('timestamp', 'frame_index', 'episode_index', 'index', 'task_index')
_INDEX_DTYPES = {'timestamp': 'float32', 'frame_index': 'int64', 'episode_index': 'int64', 'index': 'int64',
                 'task_index': 'int64'}
_ARROW = {'float32': 'float', 'float64': 'double', 'int64': 'int64', 'int32': 'int32', 'bool': 'bool',
          'string': 'string'}


class LeRobotFormatError(ValueError):
    """A directory that breaks the LeRobotDataset v3.0 layout rules (the message lists each one)."""


def decoded_frames(path: Path) -> tuple[int, tuple[int, ...] | None]:
    """(number of frames PyAV decodes from the video at ``path``, the (h, w, 3) of the first)."""
    import av
    count, shape = 0, None
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if shape is None:
                shape = frame.to_ndarray(format='rgb24').shape
            count += 1
    return count, shape


def _read(problems: list[str], path: Path):
    import pyarrow.parquet as pq
    if not path.is_file():
        problems.append(f'{path} is missing')
        return None
    return pq.read_table(path)


def _check_info(info: dict, problems: list[str]) -> None:
    if info.get('codebase_version') != CODEBASE_VERSION:
        problems.append(f"info.json codebase_version is {info.get('codebase_version')!r}, not {CODEBASE_VERSION!r}")
    if not (isinstance(info.get('fps'), int) and info['fps'] > 0):
        problems.append(f"info.json fps {info.get('fps')!r} must be an int > 0")
    for key, value in (('data_path', DATA_PATH), ('video_path', VIDEO_PATH)):
        if info.get(key) != value:
            problems.append(f'info.json {key} {info.get(key)!r} is not the v3.0 template {value!r}')
    for key in ('total_episodes', 'total_frames', 'total_tasks', 'chunks_size', 'robot_type', 'splits', 'features'):
        if key not in info:
            problems.append(f'info.json lacks {key}')
    for name, feature in info.get('features', {}).items():
        if not {'dtype', 'shape', 'names'} <= set(feature):
            problems.append(f'feature {name} lacks dtype, shape or names')
        elif not (isinstance(feature['shape'], list) and all(isinstance(d, int) and d > 0 for d in feature['shape'])):
            problems.append(f"feature {name} shape {feature['shape']!r} is not a list of positive ints")
        elif isinstance(feature['names'], list) and feature['dtype'] != 'video' \
                and len(feature['names']) != int(np.prod(feature['shape'])):
            problems.append(f"feature {name} names {len(feature['names'])} values for shape {feature['shape']}")
    for name, dtype in _INDEX_DTYPES.items():
        feature = info.get('features', {}).get(name)
        if feature is None or feature.get('dtype') != dtype or feature.get('shape') != [1]:
            problems.append(f'feature {name} must be {dtype} of shape [1], got {feature!r}')


def _check_columns(table, features: dict, problems: list[str]) -> None:
    wanted = {k: f for k, f in features.items() if f.get('dtype') not in ('video', 'image')}
    if set(table.column_names) != set(wanted):
        problems.append(f'data columns {sorted(table.column_names)} are not the non-video features {sorted(wanted)}')
    for name, feature in wanted.items():
        if name not in table.column_names:
            continue
        kind = table.schema.field(name).type
        size = int(np.prod(feature['shape']))
        arrow = _ARROW.get(feature['dtype'], feature['dtype'])
        if feature['shape'] == [1]:
            ok = str(kind) == arrow
        else:
            ok = hasattr(kind, 'value_type') and str(kind.value_type) == arrow and \
                all(len(v) == size for v in table.column(name).to_pylist())
        if not ok:
            problems.append(f"data column {name} is {kind}; info.json says {feature['dtype']} of shape {feature['shape']}")


def _check_data(table, info: dict, tasks: set[int], problems: list[str]) -> None:
    n, fps = table.num_rows, info.get('fps') or 1
    if n != info.get('total_frames'):
        problems.append(f"data holds {n} frames; info.json total_frames is {info.get('total_frames')}")
    columns = {k: table.column(k).to_numpy() for k in INDEX_FEATURES if k in table.column_names}
    if len(columns) < len(INDEX_FEATURES):
        return
    if not np.array_equal(columns['index'], np.arange(n)):
        problems.append('data index is not 0..N-1 in order')
    unknown = sorted(set(columns['task_index'].tolist()) - tasks)
    if unknown:
        problems.append(f'data task_index values {unknown[:5]} are not in tasks.parquet')
    for episode in np.unique(columns['episode_index']):
        rows = np.flatnonzero(columns['episode_index'] == episode)
        frames = columns['frame_index'][rows]
        if not np.array_equal(frames, np.arange(len(rows))):
            problems.append(f'episode {episode}: frame_index is not 0..{len(rows) - 1}')
        elif not np.allclose(columns['timestamp'][rows], (frames / fps).astype(np.float32), atol=1e-6, rtol=0):
            problems.append(f'episode {episode}: timestamp is not frame_index / fps ({fps})')


def _check_episodes(episodes, data, info: dict, task_names: set[str], root: Path, problems: list[str]) -> None:
    rows = episodes.to_pylist()
    fps = info.get('fps') or 1
    if [r.get('episode_index') for r in rows] != list(range(len(rows))) or len(rows) != info.get('total_episodes'):
        problems.append(f"episode_index is not 0..{len(rows) - 1}, or {len(rows)} episodes != total_episodes "
                        f"{info.get('total_episodes')}")
    episode_of = data.column('episode_index').to_numpy() if data is not None and 'episode_index' in data.column_names \
        else None
    expected_start = 0
    claimed: dict[Path, int] = {}
    video_keys = [k for k, f in info.get('features', {}).items() if f.get('dtype') == 'video']
    for r in rows:
        e, start, stop, length = (r.get(k) for k in ('episode_index', 'dataset_from_index', 'dataset_to_index', 'length'))
        if start != expected_start or stop - start != length or length < 1:
            problems.append(f'episode {e}: frames [{start}, {stop}) of length {length} do not follow at {expected_start}')
        elif episode_of is not None and not (stop <= len(episode_of) and np.all(episode_of[start:stop] == e)):
            problems.append(f'episode {e}: data rows [{start}, {stop}) do not all carry episode_index {e}')
        expected_start = stop if isinstance(stop, int) else expected_start
        missing = [t for t in r.get('tasks') or [] if t not in task_names]
        if missing or not r.get('tasks'):
            problems.append(f'episode {e}: tasks {r.get("tasks")} are not (all) in tasks.parquet')
        data_file = root / DATA_PATH.format(chunk_index=r.get('data/chunk_index'), file_index=r.get('data/file_index'))
        if not data_file.is_file():
            problems.append(f'episode {e}: its data file {data_file} is missing')
        for key in video_keys:
            video = root / VIDEO_PATH.format(video_key=key, chunk_index=r.get(f'videos/{key}/chunk_index'),
                                             file_index=r.get(f'videos/{key}/file_index'))
            start_s, stop_s = r.get(f'videos/{key}/from_timestamp'), r.get(f'videos/{key}/to_timestamp')
            offset = claimed.get(video, 0)
            if start_s is None or stop_s is None or abs(start_s - offset / fps) > 1e-6 \
                    or abs(stop_s - (offset + length) / fps) > 1e-6:
                problems.append(f'episode {e}: {key} timestamps [{start_s}, {stop_s}) are not its frames '
                                f'[{offset}, {offset + length}) / fps')
            claimed[video] = offset + (length or 0)
    for video, frames in claimed.items():
        if not video.is_file():
            problems.append(f'video {video} is missing')
            continue
        count, shape = decoded_frames(video)
        key = video.parts[-3]
        if count != frames:
            problems.append(f'video {video.relative_to(root)} decodes to {count} frames; its episodes claim {frames}')
        expected = tuple(info['features'][key]['shape'])
        if shape != expected:
            problems.append(f'video {video.relative_to(root)} frames are {shape}; info.json says {expected}')


def check_lerobot_dataset(root: str | Path) -> dict:
    """Raise LeRobotFormatError listing every layout rule the dataset at ``root`` breaks; return its info.json."""
    root = Path(root)
    problems: list[str] = []
    info_path = root / 'meta' / 'info.json'
    if not info_path.is_file():
        raise LeRobotFormatError(f'{root}: no meta/info.json')
    info = json.loads(info_path.read_text())
    _check_info(info, problems)
    tasks = _read(problems, root / TASKS_PATH)
    task_ids, task_names = set(), set()
    if tasks is not None:
        if not {'task', 'task_index'} <= set(tasks.column_names):
            problems.append(f'tasks.parquet columns {tasks.column_names} lack task (the index) or task_index')
        else:
            ids, names = tasks.column('task_index').to_pylist(), tasks.column('task').to_pylist()
            task_ids, task_names = set(ids), set(names)
            if sorted(ids) != list(range(len(ids))) or len(task_names) != len(names) or len(ids) != info.get('total_tasks'):
                problems.append(f"tasks.parquet task_index {sorted(ids)} is not 0..T-1 over distinct tasks, or T != "
                                f"total_tasks {info.get('total_tasks')}")
    data = _read(problems, root / DATA_PATH.format(chunk_index=0, file_index=0))
    if data is not None:
        _check_columns(data, info.get('features', {}), problems)
        _check_data(data, info, task_ids, problems)
    episodes = _read(problems, root / EPISODES_PATH.format(chunk_index=0, file_index=0))
    if episodes is not None:
        _check_episodes(episodes, data, info, task_names, root, problems)
    stats_path = root / 'meta' / 'stats.json'
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else None
    if stats is None:
        problems.append('meta/stats.json is missing')
    else:
        for name, feature in info.get('features', {}).items():
            if feature.get('dtype') in ('video', 'image'):
                continue
            size = int(np.prod(feature.get('shape', [1])))
            entry = stats.get(name, {})
            bad = [s for s in ('min', 'max', 'mean', 'std') if len(np.ravel(entry.get(s, []))) != size]
            if bad:
                problems.append(f'stats.json {name}: {bad} missing or not of size {size}')
    if problems:
        raise LeRobotFormatError(f'{root} breaks the LeRobotDataset v3.0 layout:\n  ' + '\n  '.join(problems))
    return info
