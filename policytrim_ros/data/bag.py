"""Episodes <-> rosbag2 bags (MCAP by default) with the ``rosbags`` library; no ROS install needed.

A bag holds the topics and types the robot side uses, so bags recorded on a real arm (or from
sim_node + policy_node) load through the same reader:

    /camera/image_raw                 sensor_msgs/msg/Image (rgb8; bgr8 is read too)
    /camera2/image_raw, ...           the same, one topic per further camera (constants.camera_topic)
    /joint_states                     sensor_msgs/msg/JointState (observed positions)
    /arm_controller/joint_trajectory  trajectory_msgs/msg/JointTrajectory (the commands)
    /instruction                      std_msgs/msg/String (once, at the start)
    /episode/event                    policytrim_ros/msg/EpisodeEvent (START, then SUCCESS/FAILURE)

and, when recorded from policy_node (``data/recording.py``), its provenance, which the reader
returns as ``Episode.calls`` and ``Episode.stats``:

    /policytrim/chunk_stats           policytrim_ros/msg/ChunkStats (one per inference call)
    /policytrim/episode_stats         policytrim_ros/msg/EpisodeStats (once, at the end)

Times are header stamps (sim time for the embedded arm), or the bag's log time where a stamp is
zero. A command starts at its stamp; its point i is the action of the step that starts at
``start + time_from_start[i] - time_from_start[0]`` (so a chunk window of h points expands to h
steps), and a newer command drops the points of the older one at or after its start (JTC replace
semantics). Each step then gets the latest image and joint state at or before its start (causal
alignment, 1 us tolerance for stamp rounding). With several cameras, each step's images are tiled
left to right in topic order, as the policy sees them (``Observation.image``); each image's
frame_id names the camera that took it (``Episode.cameras``). task, style, seed, success,
control_dt and cameras also go into the bag's ``custom_data`` (metadata.yaml), which
``ros2 bag info`` shows.

metadata.yaml is rosbag2 format version 8 (ROSBAG2_VERSION): the newest one that Humble's
`ros2 bag info` also reads (version 9 writes offered_qos_profiles as a YAML list, which Humble's
reader converts to a string and fails on); Jazzy and Kilted read 8 as well.

The custom EpisodeEvent type is registered from the package's own .msg text (the repo's msg/
when running from a checkout, else the installed share/policytrim_ros/msg): one source of truth,
and the type hash equals the one rosidl generated.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import yaml
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from policytrim_ros.constants import camera_topic
from policytrim_ros.data.episode import Episode
from policytrim_ros.execution.executor import ChunkRecord
from policytrim_ros.execution.metrics import EpisodeMetrics

IMAGE_TOPIC = '/' + camera_topic(0)
JOINT_STATES_TOPIC = '/joint_states'
COMMAND_TOPIC = '/arm_controller/joint_trajectory'
INSTRUCTION_TOPIC = '/instruction'
EVENT_TOPIC = '/episode/event'
TOPIC_TYPES: dict[str, str] = {
    IMAGE_TOPIC: 'sensor_msgs/msg/Image',
    JOINT_STATES_TOPIC: 'sensor_msgs/msg/JointState',
    COMMAND_TOPIC: 'trajectory_msgs/msg/JointTrajectory',
    INSTRUCTION_TOPIC: 'std_msgs/msg/String',
    EVENT_TOPIC: 'policytrim_ros/msg/EpisodeEvent',
}
"""Topic -> message type of an episode bag."""
CHUNK_STATS_TOPIC = '/policytrim/chunk_stats'
EPISODE_STATS_TOPIC = '/policytrim/episode_stats'
PROVENANCE_TOPIC_TYPES: dict[str, str] = {
    CHUNK_STATS_TOPIC: 'policytrim_ros/msg/ChunkStats',
    EPISODE_STATS_TOPIC: 'policytrim_ros/msg/EpisodeStats',
}
"""Topic -> message type of the optional provenance a recorded rollout adds (Episode.calls, .stats)."""
ROSBAG2_VERSION = 8
"""metadata.yaml format version: the newest Humble, Jazzy and Kilted all read (module docstring)."""
REQUIRED_TOPICS = (IMAGE_TOPIC, JOINT_STATES_TOPIC, COMMAND_TOPIC)
"""Topics a bag must have to become an Episode; the task comes from an event or custom_data.
Further cameras add ``image_topics(n)[1:]``, of IMAGE_TOPIC's type."""
_ALIGN_TOLERANCE_NS = 1_000    # a message this much after a step start still counts as "at" it
_START, _SUCCESS, _FAILURE = 0, 1, 2  # EpisodeEvent constants
_YAML_LOADER = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)  # libyaml: 10x faster on metadata.yaml


def image_topics(cameras: int) -> tuple[str, ...]:
    """The image topics of a bag with ``cameras`` cameras, in tile order."""
    return tuple('/' + camera_topic(i) for i in range(cameras))


class BagError(ValueError):
    """A bag that cannot become an Episode: missing, corrupt, or missing topics or data."""


class UnreadableBagError(BagError):
    """A bag whose files do not open (truncated, corrupt, no metadata.yaml): ``salvage`` may still
    recover the episode from an MCAP file, unlike a bag that opens but holds no usable episode."""


def _qos(reliability: QosReliability, durability: QosDurability, depth: int) -> Qos:
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth, reliability, durability, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


# The publishers' QoS (rclpy's qos_profile_sensor_data, RELIABLE, LATCHED in nodes/runtime.py), so
# `ros2 bag play` offers what the nodes expect.
SENSOR_QOS = _qos(QosReliability.BEST_EFFORT, QosDurability.VOLATILE, 5)
RELIABLE_QOS = _qos(QosReliability.RELIABLE, QosDurability.VOLATILE, 10)
LATCHED_QOS = _qos(QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, 1)
_TOPIC_QOS = {IMAGE_TOPIC: SENSOR_QOS, JOINT_STATES_TOPIC: SENSOR_QOS, COMMAND_TOPIC: RELIABLE_QOS,
              INSTRUCTION_TOPIC: RELIABLE_QOS, EVENT_TOPIC: LATCHED_QOS}


def _msg_dir() -> Path:
    """The directory holding policytrim_ros's .msg files (source checkout first, then share/)."""
    source = Path(__file__).resolve().parents[2] / 'msg'
    if (source / 'EpisodeEvent.msg').is_file():
        return source
    try:
        from policytrim_ros.launcher import package_share
        share = package_share() / 'msg'
    except (ImportError, LookupError) as err:
        raise RuntimeError(f'policytrim_ros message definitions not found in {source} and the package '
                           f'share is not installed ({err}); run scripts/setup.sh') from None
    if not (share / 'EpisodeEvent.msg').is_file():
        raise RuntimeError(f'policytrim_ros message definitions not found in {source} or {share}; '
                           'run scripts/setup.sh')
    return share


@functools.lru_cache(maxsize=1)
def typestore() -> Typestore:
    """The ROS 2 Kilted typestore with policytrim_ros's messages (EpisodeEvent, ...) registered."""
    store = get_typestore(Stores.ROS2_KILTED)
    for msg in sorted(_msg_dir().glob('*.msg')):
        store.register(get_types_from_msg(msg.read_text(), f'policytrim_ros/msg/{msg.stem}'))
    return store


def _time(store: Typestore, ns: int):
    return store.types['builtin_interfaces/msg/Time'](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _header(store: Typestore, ns: int, frame_id: str = ''):
    return store.types['std_msgs/msg/Header'](stamp=_time(store, ns), frame_id=frame_id)


def _duration(store: Typestore, ns: int):
    return store.types['builtin_interfaces/msg/Duration'](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def _stamp_ns(msg, log_ns: int) -> int:
    """The message's header stamp (ns), or its log time when the stamp is zero."""
    ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
    return ns if ns else log_ns


def _episode_messages(e: Episode, store: Typestore):
    """Yield (topic, log time ns, message) of an episode bag, in time order."""
    types = store.types
    names = list(e.joint_names)
    times = [_ns(t) for t in e.times]
    end = times[-1] + _ns(e.control_dt)
    topics = image_topics(max(1, len(e.cameras)))
    frame_ids = e.cameras or ('',)
    h, w = e.images.shape[1], e.images.shape[2] // len(topics)

    def event(kind: int, ns: int, step: int):
        return types[TOPIC_TYPES[EVENT_TOPIC]](header=_header(store, ns), event=kind, task=e.task,
                                               episode_id=e.episode_id, instruction=e.instruction, step=step)

    yield EVENT_TOPIC, times[0], event(_START, times[0], 0)
    yield INSTRUCTION_TOPIC, times[0], types['std_msgs/msg/String'](data=e.instruction)
    call_starts = np.flatnonzero(np.r_[True, np.diff(e.call_index) != 0])
    call_stops = dict(zip(call_starts.tolist(), np.r_[call_starts[1:], e.steps].tolist()))
    for t, ns in enumerate(times):
        for i, (topic, frame_id) in enumerate(zip(topics, frame_ids)):
            yield topic, ns, types['sensor_msgs/msg/Image'](
                header=_header(store, ns, frame_id), height=h, width=w, encoding='rgb8', is_bigendian=0,
                step=3 * w, data=np.ascontiguousarray(e.images[t, :, i * w:(i + 1) * w]).reshape(-1))
        yield JOINT_STATES_TOPIC, ns, types['sensor_msgs/msg/JointState'](
            header=_header(store, ns), name=names, position=np.asarray(e.joint_positions[t], np.float64),
            velocity=np.zeros(0), effort=np.zeros(0))
        if t in call_stops:  # the first step of an inference call sends the call's window
            points = [types['trajectory_msgs/msg/JointTrajectoryPoint'](
                positions=np.asarray(e.actions[k], np.float64), velocities=np.zeros(0),
                accelerations=np.zeros(0), effort=np.zeros(0),
                time_from_start=_duration(store, _ns((k - t + 1) * e.control_dt)))
                for k in range(t, call_stops[t])]
            yield COMMAND_TOPIC, ns, types['trajectory_msgs/msg/JointTrajectory'](
                header=_header(store, ns), joint_names=names, points=points)
    yield EVENT_TOPIC, end, event(_SUCCESS if e.success else _FAILURE, end, e.steps)


def write_episode_bag(episode: Episode, path: str | Path, storage: str = 'mcap') -> Path:
    """Write ``episode`` as a rosbag2 bag directory at ``path`` (which must not exist); return it.

    One Image per camera and one JointState per step at the step's start; one JointTrajectory per inference
    call (a run of equal ``call_index``), its points at (i+1)*control_dt, stamped with the call's
    first step; /instruction and a START event at t = times[0]; SUCCESS or FAILURE at the end of
    the last step. ``storage``: 'mcap' (zstd-compressed chunks) or 'sqlite3'.
    """
    plugins = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage '{storage}' must be one of {sorted(plugins)}")
    path = Path(path)
    if path.exists():
        raise FileExistsError(f'{path} exists; a bag is never overwritten')
    path.parent.mkdir(parents=True, exist_ok=True)
    store = typestore()
    writer = Writer(path, version=ROSBAG2_VERSION, storage_plugin=plugins[storage])
    if storage == 'mcap':
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    e = episode
    for key, value in (('task', e.task), ('style', e.style), ('seed', str(e.seed)),
                       ('success', str(e.success).lower()), ('control_dt', repr(e.control_dt)),
                       ('steps', str(e.steps)), ('cameras', ','.join(e.cameras))):
        writer.set_custom_data(key, value)
    with writer:
        types = {**TOPIC_TYPES, **{t: TOPIC_TYPES[IMAGE_TOPIC] for t in image_topics(max(1, len(e.cameras)))}}
        connections = {topic: writer.add_connection(topic, msgtype, typestore=store,
                                                    offered_qos_profiles=[_TOPIC_QOS.get(topic, SENSOR_QOS)])
                       for topic, msgtype in types.items()}
        for topic, ns, msg in _episode_messages(e, store):
            writer.write(connections[topic], ns, store.serialize_cdr(msg, types[topic]))
    return path


def bag_custom_data(path: str | Path) -> dict[str, str]:
    """The ``custom_data`` of a bag directory's metadata.yaml ({} for a bare .mcap or none set)."""
    meta = Path(path) / 'metadata.yaml'
    if not meta.is_file():
        return {}
    try:
        info = yaml.load(meta.read_text(), Loader=_YAML_LOADER)['rosbag2_bagfile_information']
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise BagError(f'{meta} is not a rosbag2 metadata file: {err}') from None
    return {str(k): str(v) for k, v in (info.get('custom_data') or {}).items()}


def episode_topics(topics: dict[str, str], path: Path) -> tuple[str, ...]:
    """The image topics (IMAGE_TOPIC and the further cameras' present in an unbroken run) of a bag
    whose topics map to these message types; BagError if a required topic is missing or any
    episode topic has an unexpected type."""
    missing = [t for t in REQUIRED_TOPICS if t not in topics]
    if missing:
        raise BagError(f'{path} lacks the topics {missing} (it has {sorted(topics)})')
    cameras = 1
    while image_topics(cameras + 1)[-1] in topics:
        cameras += 1
    expected = {**TOPIC_TYPES, **PROVENANCE_TOPIC_TYPES, **{t: TOPIC_TYPES[IMAGE_TOPIC] for t in image_topics(cameras)}}
    wrong = {t: topics[t] for t in expected if t in topics and topics[t] != expected[t]}
    if wrong:
        raise BagError(f'{path}: topics with unexpected types {wrong}; expected '
                       f'{ {t: expected[t] for t in wrong} }')
    return image_topics(cameras)


def _read_messages(path: Path) -> tuple[dict[str, list[tuple[int, object]]], tuple[str, ...]]:
    """(topic -> [(log time ns, deserialized message)] for the episode topics in log-time order,
    the image topics)."""
    store = typestore()
    try:
        with Reader(path) as reader:
            cameras = episode_topics({c.topic: c.msgtype for c in reader.connections}, path)
            expected = {*TOPIC_TYPES, *PROVENANCE_TOPIC_TYPES, *cameras}
            messages: dict[str, list[tuple[int, object]]] = {t: [] for t in expected}
            wanted = [c for c in reader.connections if c.topic in expected]
            for connection, log_ns, raw in reader.messages(wanted):
                messages[connection.topic].append((log_ns, store.deserialize_cdr(raw, connection.msgtype)))
    except BagError:
        raise
    except Exception as err:  # a damaged file fails deep inside rosbags/mcap/zstd in many ways
        raise UnreadableBagError(f'cannot read the bag {path}: {type(err).__name__}: {err}') from err
    return messages, cameras


def _expand_commands(commands: list[tuple[int, object]], path: Path
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(step start times ns (T,), actions (T, A), command index (T,), joint names) of the commands."""
    timed = sorted(((_stamp_ns(msg, ns), msg) for ns, msg in commands), key=lambda c: c[0])
    filled = [msg for _, msg in timed if len(msg.points)]
    if not filled:
        raise BagError(f'{path}: {COMMAND_TOPIC} has no trajectory points')
    names = list(filled[0].joint_names)
    starts, actions, calls = [], [], []
    for k, (start, msg) in enumerate(timed):
        if not len(msg.points):
            continue  # an empty trajectory (hold) only ends the previous one
        if sorted(msg.joint_names) != sorted(names):
            raise BagError(f'{path}: command {k} has joints {list(msg.joint_names)}, the first one {names}')
        order = [list(msg.joint_names).index(n) for n in names]
        offsets = [p.time_from_start.sec * 1_000_000_000 + p.time_from_start.nanosec for p in msg.points]
        if np.any(np.diff(offsets) <= 0):
            raise BagError(f'{path}: command {k} has time_from_start not strictly increasing: {offsets} ns')
        replaced_at = timed[k + 1][0] - _ALIGN_TOLERANCE_NS if k + 1 < len(timed) else None
        for point, offset in zip(msg.points, offsets):
            step = start + offset - offsets[0]
            if replaced_at is not None and step >= replaced_at:
                break
            if len(point.positions) != len(names):
                raise BagError(f'{path}: command {k} has a point with {len(point.positions)} positions '
                               f'for {len(names)} joints')
            starts.append(step)
            actions.append(np.asarray(point.positions, dtype=np.float64)[order])
            calls.append(k)
    return np.array(starts, dtype=np.int64), np.stack(actions), np.array(calls), names


def _latest(samples: list[tuple[int, object]], steps_ns: np.ndarray, topic: str, path: Path) -> list:
    """For each step start, the latest message (by stamp) at or before it."""
    samples = sorted(((_stamp_ns(msg, ns), msg) for ns, msg in samples), key=lambda s: s[0])
    times = np.array([ns for ns, _ in samples], dtype=np.int64)
    index = np.searchsorted(times, steps_ns + _ALIGN_TOLERANCE_NS, side='right') - 1
    if len(samples) == 0 or index[0] < 0:
        raise BagError(f'{path}: no {topic} message at or before the first step ({steps_ns[0]} ns)')
    return [samples[i][1] for i in index]


def _image(msg, path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an rgb8 or bgr8 Image."""
    if msg.encoding not in ('rgb8', 'bgr8'):
        raise BagError(f"{path}: image encoding '{msg.encoding}' is not supported (rgb8 or bgr8)")
    h, w = msg.height, msg.width
    if msg.step < 3 * w or len(msg.data) != msg.step * h:
        raise BagError(f'{path}: image buffer has {len(msg.data)} bytes for {w}x{h} with step {msg.step}')
    image = np.asarray(msg.data, dtype=np.uint8).reshape(h, msg.step)[:, :3 * w].reshape(h, w, 3)
    return image[..., ::-1] if msg.encoding == 'bgr8' else image


def _positions(msg, names: list[str], path: Path) -> np.ndarray:
    """(A,) positions of ``names`` from a JointState (extra joints ignored)."""
    have = list(msg.name)
    missing = [n for n in names if n not in have]
    if missing or len(msg.position) != len(have):
        raise BagError(f'{path}: joint_states lacks joints {missing} or has {len(msg.position)} positions '
                       f'for {len(have)} names')
    return np.asarray(msg.position, dtype=np.float64)[[have.index(n) for n in names]]


def read_episode_bag(path: str | Path) -> Episode:
    """Load a bag (directory, or a bare .mcap/.db3 file) as an Episode; raises BagError if unusable.

    The steps are the expanded commands between the START event and the end event (when present).
    task, instruction and success come from the events and /instruction, falling back to
    custom_data; seed, style and control_dt come from custom_data (-1, 'recorded' and the median
    step spacing when absent). A damaged MCAP bag may still hold an episode: ``salvage``.
    """
    path = Path(path)
    if not path.exists():
        raise BagError(f'no bag at {path}')
    messages, cameras = _read_messages(path)
    return episode_from_messages(path, messages, cameras, bag_custom_data(path) if path.is_dir() else {})


def episode_from_messages(path: Path, messages: dict[str, list[tuple[int, object]]], cameras: tuple[str, ...],
                          custom: dict[str, str], complete: bool = True) -> Episode:
    """The Episode of a bag's deserialized ``messages`` (topic -> [(log time ns, message)]), its
    image topics ``cameras`` and its ``custom`` data (see ``read_episode_bag``).

    complete: False for what is left of a recording cut short (``salvage``). Without an end event
    its steps then stop at the last one whose images and joint state were recorded (a command's
    later points were never observed), and it is not successful: custom_data's success describes
    the whole recording.
    """
    events = sorted(((_stamp_ns(m, ns), m) for ns, m in messages[EVENT_TOPIC]), key=lambda e: e[0])
    start = next(((ns, m) for ns, m in events if m.event == _START), None)
    end = next(((ns, m) for ns, m in events if m.event in (_SUCCESS, _FAILURE)
                and (start is None or ns >= start[0])), None)
    stats, chunk_records = _provenance(messages, start[1].episode_id if start is not None else None, path)
    steps_ns, actions, calls, names = _expand_commands(messages[COMMAND_TOPIC], path)
    keep = np.ones(len(steps_ns), dtype=bool)
    if start is not None:
        keep &= steps_ns >= start[0] - _ALIGN_TOLERANCE_NS
    if end is not None:
        keep &= steps_ns < end[0] - _ALIGN_TOLERANCE_NS
    elif not complete:
        observed = min(max((_stamp_ns(m, ns) for ns, m in messages[t]), default=-1)
                       for t in (*cameras, JOINT_STATES_TOPIC))
        keep &= steps_ns <= observed + _ALIGN_TOLERANCE_NS
    if complete and stats is not None:
        # at most the steps policy_node counted: the hold it sends at an episode's end is neither a step
        # nor a call, also when the end event (a step limit's FAILURE) was stamped after it
        keep &= np.cumsum(keep) <= stats.steps
    if not keep.any():
        raise BagError(f'{path}: no command falls between the START and the end event'
                       + ('' if complete else ' (or the last recorded observation)'))
    steps_ns, actions, calls = steps_ns[keep], actions[keep], calls[keep]
    per_camera = [_latest(messages[t], steps_ns, t, path) for t in cameras]
    tiles = [[_image(m, path) for m in msgs] for msgs in per_camera]
    sizes = {(t, tile.shape) for t, msgs in zip(cameras, tiles) for tile in msgs}
    if len({shape for _, shape in sizes}) > 1:
        raise BagError(f'{path}: the images differ in size {sorted(sizes)}; tiling the cameras needs one size')
    images = np.stack([np.concatenate(step, axis=1) if len(step) > 1 else step[0] for step in zip(*tiles)])
    frame_ids = tuple(msgs[0].header.frame_id for msgs in per_camera)
    positions = np.stack([_positions(m, names, path)
                          for m in _latest(messages[JOINT_STATES_TOPIC], steps_ns, JOINT_STATES_TOPIC, path)])
    task = start[1].task if start is not None else custom.get('task', '')
    if not task:
        raise BagError(f'{path}: no task: neither a START event on {EVENT_TOPIC} nor custom_data task')
    instructions = [m.data for _, m in messages[INSTRUCTION_TOPIC]]
    instruction = instructions[0] if instructions else (start[1].instruction if start is not None else '')
    if end is not None:
        success = end[1].event == _SUCCESS
    else:
        success = complete and (stats.success if stats is not None else custom.get('success') == 'true')
    if 'control_dt' in custom:
        control_dt = float(custom['control_dt'])
    elif len(steps_ns) > 1:
        control_dt = float(np.median(np.diff(steps_ns))) / 1e9
    else:
        raise BagError(f'{path}: one step and no custom_data control_dt: the control period is unknown')
    origin = start[0] if start is not None else steps_ns[0]
    return Episode(task=task, instruction=instruction, seed=int(custom.get('seed', -1)),
                   style=custom.get('style', 'recorded'), success=bool(success), control_dt=control_dt,
                   joint_names=tuple(names), images=images, joint_positions=positions, actions=actions,
                   times=(steps_ns - origin) / 1e9, call_index=np.unique(calls, return_inverse=True)[1],
                   cameras=frame_ids if all(frame_ids) else (), calls=chunk_records, stats=stats)


def _provenance(messages: dict[str, list[tuple[int, object]]], episode_id: str | None, path: Path
                ) -> tuple[EpisodeMetrics | None, tuple[ChunkRecord, ...]]:
    """(the episode's EpisodeStats, its ChunkStats in call order, one per call) from a bag's
    provenance topics; ``episode_id`` (the START event's) picks the episode's messages, else the
    last EpisodeStats' id does."""
    reports = [m for _, m in messages.get(EPISODE_STATS_TOPIC, ()) if episode_id in (None, m.episode_id)]
    if episode_id is None and reports:
        episode_id = reports[-1].episode_id
    try:
        stats = None if not reports else EpisodeMetrics(
            episode_id=reports[-1].episode_id, task=reports[-1].task, instruction=reports[-1].instruction,
            success=bool(reports[-1].success), steps=int(reports[-1].steps),
            inference_calls=int(reports[-1].inference_calls), n_action_steps=int(reports[-1].n_action_steps),
            chunk_size=int(reports[-1].chunk_size), chunk_utilization=float(reports[-1].chunk_utilization),
            wall_clock_s=float(reports[-1].wall_clock_s), end_reason=reports[-1].end_reason,
            # absent from bags of a policy_node older than hot reloads: the defaults
            weights_version=int(getattr(reports[-1], 'weights_version', 0)),
            sampling_seed=int(getattr(reports[-1], 'sampling_seed', -1)))
    except ValueError as err:
        raise BagError(f'{path}: {EPISODE_STATS_TOPIC}: {err}') from None
    calls = {int(m.call_index): ChunkRecord(
        episode_id=m.episode_id, call_index=int(m.call_index), chunk_size=int(m.chunk_size),
        n_action_steps=int(m.n_action_steps), first_step=int(m.first_step), last_step=int(m.last_step),
        inference_latency_s=float(m.inference_latency_s), weights_version=int(m.weights_version),
        sampling_seed=int(m.sampling_seed))
        for _, m in messages.get(CHUNK_STATS_TOPIC, ()) if episode_id in (None, m.episode_id)}
    return stats, tuple(calls[k] for k in sorted(calls))
