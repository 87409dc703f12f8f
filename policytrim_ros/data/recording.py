"""Record every episode as its own rosbag2 bag (MCAP), messages kept as they arrived (CDR bytes).

``EpisodeRecorder`` takes the serialized messages a recorder subscribes to (``nodes/recorder_node``
passes rclpy's raw subscriptions straight through) and writes each episode into
``<output_dir>/<episode id>/``, a rosbag2 directory that ``read_episode_bag``, ``rosbags``, the
``mcap`` tools and ``ros2 bag info`` read. Only the small episode-keyed messages are deserialized
(EpisodeEvent, ChunkStats, EpisodeStats); images, joint states and commands are written as they came.

An episode's bag
- opens on its EpisodeEvent START, or on the first ChunkStats of an episode id not seen before
  (an episode policy_node started from a plain instruction); a START ends the stream of any
  episode still open (it was preempted; its own EpisodeStats may still follow);
- takes the stream messages (cameras, joint states, commands) by their header stamp, read from
  the CDR bytes: each goes to the open episode that started last at or before its stamp, so a
  recorder that falls behind (rclpy takes one message per topic per wake-up, so an episode's
  EpisodeStats can come before its last images) still splits them right. A command stamped 0
  ("start now", policy_node's closing hold) goes to the newest episode; the instruction (no
  header) to the running one, or to the next one's pre-roll;
- begins with its pre-roll, from a short buffer of each stream topic: the messages stamped from
  its start on that came before the START did, and the latest camera image and joint state
  before it (the observation its first step sees);
- takes the episode-keyed messages of its own id (events, ChunkStats, EpisodeStats);
- closes ``grace_s`` after its EpisodeStats arrived, with the episode's custom_data in
  metadata.yaml. Messages between episodes go to no bag (they wait in the pre-roll buffer);
  episode-keyed messages of a closed episode are counted (``late``).

A crash of the recorder leaves every closed episode complete. The running one's directory has no
metadata.yaml (what ``ros2 bag record`` leaves too): ``read_episode_bag`` refuses it, and
``data/salvage.py`` recovers its steps up to the last flush (at most ``flush_period_s`` old).
"""
from __future__ import annotations

import re
import struct
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

from rosbags.interfaces import Qos
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.rosbag2.storage_mcap import McapWriter

from policytrim_ros.config import check_seconds, suggest
from policytrim_ros.data.bag import ROSBAG2_VERSION, typestore

STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
COMPRESSIONS = ('none', 'zstd')
ROLES = ('camera', 'observation', 'command', 'event', 'chunk_stats', 'episode_stats')
"""camera and observation: streamed, the latest one pre-rolled (camera: its frame_id names a camera
in custom_data); command: streamed, pre-rolled since the last episode's end; event, chunk_stats,
episode_stats: routed by their episode_id."""
_KEYED = ('event', 'chunk_stats', 'episode_stats')
_START = 0   # EpisodeEvent.START
_RECENT = 50  # stamped messages kept per topic for the next episode's pre-roll


@dataclass(frozen=True)
class RecordingConfig:
    """Where and how episodes are recorded.

    output_dir: directory that gets one bag directory per episode, named after its episode id
        (characters other than letters, digits, '.', '_' and '-' become '_'). An existing bag is
        never overwritten: that episode is not recorded again (a restarted recorder and the
        latched START of the episode it was recording).
    storage: mcap or sqlite3 (mcap: a recording cut short stays salvageable).
    compression: none or zstd (MCAP chunk compression: smaller bags for more recorder CPU).
    grace_s: wall-clock seconds an episode's bag stays open after its EpisodeStats arrived, for
        the ChunkStats and events published just before it that arrive after it.
    flush_period_s: wall-clock seconds between writes of the running episode's buffered messages
        to disk (mcap): what a crash of the recorder can lose.
    control_dt: seconds per control step, written to each bag's custom_data (0 = not written; the
        reader then takes the median step spacing).
    """

    output_dir: str = 'recordings'
    storage: str = 'mcap'
    compression: str = 'none'
    grace_s: float = 1.0
    flush_period_s: float = 1.0
    control_dt: float = 0.0

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("output_dir ('') must name a directory")
        if self.storage not in STORAGES:
            raise ValueError(f"storage '{self.storage}' must be one of {list(STORAGES)}{suggest(self.storage, STORAGES)}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression '{self.compression}' must be one of {list(COMPRESSIONS)}"
                             f'{suggest(self.compression, COMPRESSIONS)}')
        if self.compression != 'none' and self.storage != 'mcap':
            raise ValueError(f"compression '{self.compression}' needs storage mcap (storage is '{self.storage}')")
        check_seconds(self, 'grace_s', 'flush_period_s', 'control_dt', zero=True)


@dataclass(frozen=True)
class RecordedTopic:
    """A topic as it goes into the bags: absolute ``name``, ``msgtype`` ('sensor_msgs/msg/Image'),
    its ``role`` (ROLES) and the QoS its publishers offer (for ``ros2 bag play``)."""

    name: str
    msgtype: str
    role: str
    qos: Qos

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"role '{self.role}' of {self.name} must be one of {list(ROLES)}")


def bag_name(episode_id: str) -> str:
    """The bag directory name of ``episode_id``: the id with unsafe characters replaced by '_'."""
    name = re.sub(r'[^A-Za-z0-9._-]', '_', episode_id).lstrip('.')
    return name or 'episode-' + time.strftime('%Y%m%d-%H%M%S')


def _has_header(store, msgtype: str) -> bool:
    """Whether messages of ``msgtype`` start with a std_msgs/Header (their stamp is readable raw)."""
    fields = store.fielddefs[msgtype][1]
    return bool(fields) and fields[0][1][1] == 'std_msgs/msg/Header'


def _stamp_ns(data: bytes) -> int:
    """header.stamp (ns) of a CDR message that starts with a std_msgs/Header, read without
    deserializing it: after the 4-byte encapsulation header (byte 1: 1 = little endian) come
    int32 sec and uint32 nanosec."""
    sec, nanosec = struct.unpack_from('<iI' if data[1] == 1 else '>iI', data, 4)
    return sec * 1_000_000_000 + nanosec


def _header_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


class _EpisodeBag:
    """One episode's open bag and what it learned about the episode for custom_data."""

    def __init__(self, path: Path, episode_id: str, topics: dict[str, RecordedTopic], config: RecordingConfig,
                 now: float):
        self.path, self.episode_id, self.config = path, episode_id, config
        self.writer = Writer(path, version=ROSBAG2_VERSION, storage_plugin=STORAGES[config.storage])
        if config.compression == 'zstd':
            self.writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self.writer.open()
        store = typestore()
        self.connections = {t.name: self.writer.add_connection(t.name, t.msgtype, typestore=store,
                                                               offered_qos_profiles=[t.qos])
                            for t in topics.values()}
        self.cameras = {t.name: '' for t in topics.values() if t.role == 'camera'}
        self.messages = 0
        self.calls = 0
        self.start = None        # the START EpisodeEvent
        self.stats = None        # the EpisodeStats
        self.closes_at: float | None = None   # monotonic deadline once the episode's stream ended
        self.start_ns = 0        # stream messages stamped from here on belong to this episode
        self.flushed_at = now

    def write(self, topic: str, data: bytes, log_ns: int) -> None:
        if topic in self.cameras and not self.cameras[topic]:   # once per camera: its name
            self.cameras[topic] = typestore().deserialize_cdr(data, 'sensor_msgs/msg/Image').header.frame_id
        self.writer.write(self.connections[topic], log_ns, data)
        self.messages += 1

    def flush(self, now: float) -> None:
        """Write the messages buffered in memory to disk as a finished MCAP chunk (rosbags keeps a
        chunk in memory up to 1 MiB; its McapWriter API, pinned in requirements.txt, has no flush).
        An OS-level write: it survives a killed process, not a power cut."""
        self.flushed_at = now
        storage = self.writer.storage
        if isinstance(storage, McapWriter) and storage.chunk.bio.tell():
            storage.close_chunk()
            storage.bio.flush()

    def close(self) -> None:
        """Write custom_data and metadata.yaml: the bag is complete."""
        custom = {'episode_id': self.episode_id, 'style': 'policy',
                  'complete': str(self.stats is not None).lower(),
                  'inference_calls_recorded': str(self.calls),
                  'cameras': ','.join(self.cameras.values()) if all(self.cameras.values()) else ''}
        if self.start is not None:
            custom.update(task=self.start.task, instruction=self.start.instruction)
        if self.stats is not None:
            s = self.stats
            custom.update(task=s.task, instruction=s.instruction, success=str(bool(s.success)).lower(),
                          end_reason=s.end_reason, steps=str(s.steps), inference_calls=str(s.inference_calls),
                          weights_version=str(s.weights_version), sampling_seed=str(s.sampling_seed))
        if self.config.control_dt:
            custom['control_dt'] = repr(self.config.control_dt)
        for key, value in custom.items():
            self.writer.set_custom_data(key, value)
        self.writer.close()


class EpisodeRecorder:
    """Splits a stream of serialized messages into one bag per episode (module docstring).

    topics: every topic the caller will pass to ``write``. clock: monotonic seconds (for the grace
    and flush periods; tests pass their own). log: called with one line per bag opened or closed,
    and per episode that is not recorded.
    """

    def __init__(self, config: RecordingConfig, topics: list[RecordedTopic], clock=time.monotonic, log=print):
        self.config, self.clock, self.log = config, clock, log
        self.topics = {t.name: t for t in topics}
        if len(self.topics) != len(topics):
            raise ValueError(f'a topic is recorded twice: {sorted(t.name for t in topics)}')
        for role in _KEYED:
            if sum(t.role == role for t in topics) > 1:
                raise ValueError(f'more than one {role} topic: {[t.name for t in topics if t.role == role]}')
        store = typestore()   # built once (0.5 s), now rather than on the first START
        self.output_dir = Path(config.output_dir)
        self.bags: dict[str, _EpisodeBag] = {}     # open bags by episode id
        self.finished: list[Path] = []             # closed bags, in closing order
        self.done_ids: set[str] = set()            # closed here, or whose bag existed: never opened again
        self.late = Counter()                      # episode id -> messages that came after its bag closed
        # stream topics whose messages start with a std_msgs/Header: routed by stamp, kept for the pre-roll
        self._recent = {t.name: deque(maxlen=_RECENT) for t in topics
                        if t.role not in _KEYED and _has_header(store, t.msgtype)}
        self._unstamped: dict[str, tuple[int, bytes]] = {}   # instruction: the latest not yet in a bag
        self._last_stamp = 0                                  # the newest stamp seen (ns)
        self._ended_at = 0                                    # the newest stamp when the last episode ended

    # -- the stream ------------------------------------------------------------------------------
    def write(self, topic: str, data: bytes, log_ns: int) -> None:
        """Route one serialized message received at ``log_ns`` (ns) to its episode's bag."""
        role = self.topics[topic].role
        if role in _KEYED:
            self._write_keyed(topic, role, data, log_ns)
            return
        if topic in self._recent:
            stamp = _stamp_ns(data)
            if stamp:   # the bag of the newest episode that started at or before the stamp
                self._recent[topic].append((stamp, log_ns, data))
                self._last_stamp = max(self._last_stamp, stamp)
                bag = max((b for b in self.bags.values() if b.start_ns <= stamp), key=lambda b: b.start_ns,
                          default=None)
            else:       # stamp 0, "now" (a hold): the newest episode
                bag = max(self.bags.values(), key=lambda b: b.start_ns, default=None)
        else:           # no header: the running episode, else the next one's pre-roll
            bag = max((b for b in self.bags.values() if b.closes_at is None), key=lambda b: b.start_ns, default=None)
            if bag is None:
                self._unstamped[topic] = (log_ns, data)
        if bag is not None:
            bag.write(topic, data, log_ns)

    def _write_keyed(self, topic: str, role: str, data: bytes, log_ns: int) -> None:
        msg = typestore().deserialize_cdr(data, self.topics[topic].msgtype)
        episode_id = msg.episode_id
        if role == 'event' and msg.event == _START:
            self._open(episode_id, _header_ns(msg) or self._last_stamp)
        elif role == 'chunk_stats' and episode_id not in self.bags:   # started by a plain instruction:
            self._open(episode_id, self._ended_at + 1)                 # it owns what came after the last one
        bag = self.bags.get(episode_id)
        if bag is None:
            self.late[episode_id] += 1
            return
        bag.write(topic, data, log_ns)
        if role == 'event' and msg.event == _START:
            bag.start = msg
        elif role == 'chunk_stats':
            bag.calls += 1
        elif role == 'episode_stats':
            bag.stats = msg
            self._ended_at = self._last_stamp
            self._end_stream(bag)

    def _open(self, episode_id: str, start_ns: int) -> None:
        """Open the bag of ``episode_id`` (once) for the messages stamped from ``start_ns`` on."""
        if episode_id in self.bags or episode_id in self.done_ids:
            return
        for other in self.bags.values():
            self._end_stream(other)   # preempted: its EpisodeStats may still come
        path = self.output_dir / bag_name(episode_id)
        if path.exists():
            self.done_ids.add(episode_id)
            self.log(f'not recording episode {episode_id}: {path} exists (a bag is never overwritten)')
            return
        bag = self.bags[episode_id] = _EpisodeBag(path, episode_id, self.topics, self.config, self.clock())
        bag.start_ns = start_ns
        preroll = [(log_ns, topic, data) for topic, (log_ns, data) in self._unstamped.items()]
        self._unstamped.clear()
        for topic, recent in self._recent.items():
            before = [m for m in recent if m[0] < start_ns]
            if before and self.topics[topic].role != 'command':   # the observation the first step sees
                preroll.append((before[-1][1], topic, before[-1][2]))
            preroll += [(log_ns, topic, data) for stamp, log_ns, data in recent if stamp >= start_ns]
        for log_ns, topic, data in sorted(preroll, key=lambda m: m[0]):
            bag.write(topic, data, log_ns)
        self.log(f'recording episode {episode_id} into {path}')

    def _end_stream(self, bag: _EpisodeBag) -> None:
        """The episode ended (or was preempted): its bag closes after the grace period."""
        if bag.closes_at is None:
            bag.closes_at = self.clock() + self.config.grace_s

    # -- time and shutdown -----------------------------------------------------------------------
    def poll(self) -> None:
        """Close the bags whose grace period is over; flush the others' buffered messages if due.
        Call it periodically (recorder_node: every 0.1 s)."""
        now = self.clock()
        for episode_id, bag in list(self.bags.items()):
            if bag.closes_at is not None and now >= bag.closes_at:
                self._close(episode_id)
            elif now - bag.flushed_at >= self.config.flush_period_s:
                bag.flush(now)

    def close(self) -> None:
        """Close every open bag (shutdown); an episode without its EpisodeStats is marked complete: false."""
        for episode_id in list(self.bags):
            self._close(episode_id)

    def _close(self, episode_id: str) -> None:
        bag = self.bags.pop(episode_id)
        bag.close()
        self.done_ids.add(episode_id)
        self.finished.append(bag.path)
        state = 'complete' if bag.stats is not None else 'INCOMPLETE: no EpisodeStats arrived'
        self.log(f'closed {bag.path}: {bag.messages} messages, {bag.calls} inference calls ({state})')
