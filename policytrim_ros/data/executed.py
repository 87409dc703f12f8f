"""A deployed policy's recorded episode with its executed windows: which inference call ran which steps.

The windows come from the chunk provenance topic when the bag has it (``ChunkStats``: the call's
first step, h and H, latency), else from the commands themselves, which any ``ros2 bag record`` of
the robot-side topics holds: each JointTrajectory command is one inference call's executed window,
its number of points is the h it was sent with, and it runs until a newer command replaces it (JTC
replace semantics, as ``data.bag`` expands them). H is then unknown to the bag (0 here); the
policy that produced the episode knows it.

Reading goes through ``data.bag`` (the same episode, steps and alignment as behaviour cloning
sees); each bag is read once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from policytrim_ros.data.bag import (COMMAND_TOPIC, EPISODE_STATS_TOPIC, EVENT_TOPIC, PROVENANCE_TOPIC_TYPES,
                                     TOPIC_TYPES, BagError, UnreadableBagError, bag_custom_data,
                                     episode_from_messages, episode_topics, typestore)
from policytrim_ros.data.dataset import find_bags
from policytrim_ros.data.episode import Episode

CHUNK_STATS_TOPIC = '/policytrim/chunk_stats'
"""policy_node's ChunkStats topic (``topics.chunk_stats``), as a recorder started at the root names it."""
CHUNK_STATS_TYPE = 'policytrim_ros/msg/ChunkStats'
_START = 0                # EpisodeEvent.START
_TOLERANCE_NS = 1_000     # data.bag's alignment tolerance for stamp rounding


@dataclass(frozen=True)
class ExecutedWindow:
    """One inference call's window, as the episode executed it.

    first_step: the episode step (0-based) it started at; steps: control steps it ran before the
    next call or the episode end; n_action_steps: h it was sent with (>= steps when the episode
    ended or the next call came early); chunk_size: H of the chunk (0 when the bag does not say);
    inference_latency_s: seconds the call took (nan when unknown).
    """

    first_step: int
    steps: int
    n_action_steps: int
    chunk_size: int = 0
    inference_latency_s: float = float('nan')


@dataclass(frozen=True)
class PolicyEpisode:
    """A recorded episode and its executed windows (in step order; they cover every step once).

    source: where the windows came from: 'chunk_stats' or 'commands'.
    """

    episode: Episode
    windows: tuple[ExecutedWindow, ...]
    source: str
    path: str = ''

    def __post_init__(self) -> None:
        covered = sum(w.steps for w in self.windows)
        if covered != self.episode.steps or any(w.steps < 1 for w in self.windows):
            raise ValueError(f'{self.path}: the windows cover {covered} steps in {len(self.windows)} calls; the episode '
                             f'has {self.episode.steps}')

    @property
    def n_action_steps(self) -> float:
        """Mean h the episode's calls were sent with, the last call left out unless it is the only
        one: the episode's end may cut it short (a step limit, or a bag whose last command holds
        only the steps that ran), so it does not tell the h the episode ran at."""
        sent = [w.n_action_steps for w in self.windows]
        return float(np.mean(sent[:-1] if len(sent) > 1 else sent))

    def chunk_size(self, default: int) -> int:
        """H from the windows, or ``default`` (the policy's) when the bag does not record it."""
        sizes = {w.chunk_size for w in self.windows if w.chunk_size}
        if len(sizes) > 1:
            raise ValueError(f'{self.path}: calls with different chunk sizes {sorted(sizes)}')
        return sizes.pop() if sizes else int(default)

    def acceptance_ratio(self, default_chunk_size: int) -> float:
        """gamma = mean h / H, capped at 1 (PolicyTrim Stage 1)."""
        return min(1.0, self.n_action_steps / self.chunk_size(default_chunk_size))


def _stamp_ns(msg, log_ns: int) -> int:
    ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
    return ns if ns else log_ns


def _runs(call_index: np.ndarray) -> list[tuple[int, int]]:
    """(first step, steps) of each run of equal call_index."""
    starts = np.flatnonzero(np.r_[True, np.diff(call_index) != 0])
    return list(zip(starts.tolist(), np.diff(np.r_[starts, len(call_index)]).tolist()))


def windows_from_commands(episode: Episode, messages: dict[str, list], path: Path) -> tuple[ExecutedWindow, ...]:
    """The windows of ``episode``, each sent with h = the point count of the command running at its
    first step (the latest command stamped at or before it)."""
    commands = sorted(((_stamp_ns(m, ns), len(m.points)) for ns, m in messages[COMMAND_TOPIC] if len(m.points)))
    stamps = np.array([ns for ns, _ in commands], dtype=np.int64)
    starts = [_stamp_ns(m, ns) for ns, m in messages[EVENT_TOPIC] if m.event == _START]
    origin = min(starts) if starts else int(stamps[0])   # data.bag's time origin of episode.times
    windows = []
    for first, steps in _runs(episode.call_index):
        at = origin + int(round(episode.times[first] * 1e9))
        k = int(np.searchsorted(stamps, at + _TOLERANCE_NS, side='right')) - 1
        if k < 0:
            raise BagError(f'{path}: no command before step {first}')
        if commands[k][1] < steps:
            raise BagError(f'{path}: the window at step {first} ran {steps} steps on a command of {commands[k][1]} points')
        windows.append(ExecutedWindow(first, steps, commands[k][1]))
    return tuple(windows)


def windows_from_chunk_stats(episode: Episode, stats: list) -> tuple[ExecutedWindow, ...] | None:
    """The windows from ChunkStats messages (the last one per first_step), or None when any window
    of the episode has none (a recording that started late, or an older policy_node)."""
    by_first = {m.first_step: m for m in stats}
    windows = []
    for first, steps in _runs(episode.call_index):
        m = by_first.get(first)
        if m is None:
            return None
        if m.n_action_steps < steps:
            return None   # not this recording's call (an episode_id reused): trust the commands
        windows.append(ExecutedWindow(first, steps, int(m.n_action_steps), int(m.chunk_size),
                                      float(m.inference_latency_s)))
    return tuple(windows)


def _recorded_store(connection) -> Typestore:
    """A typestore with the message definition the bag recorded for ``connection`` (ChunkStats grows
    fields between versions of policy_node: a bag decodes with its own), or ours when it has none."""
    text = getattr(getattr(connection, 'msgdef', None), 'data', '') or ''
    if not text.strip():
        return typestore()
    store = get_typestore(Stores.ROS2_KILTED)
    try:
        store.register(get_types_from_msg(text, connection.msgtype))
    except Exception as err:  # noqa: BLE001 - rosbags raises several types for a definition it cannot use
        raise BagError(f'{connection.topic}: cannot use the recorded definition of {connection.msgtype}: {err}') from None
    return store


def read_policy_bag(path: str | Path, chunk_stats_topic: str = CHUNK_STATS_TOPIC) -> PolicyEpisode:
    """The episode of a policy bag (directory, or a bare .mcap/.db3) with its executed windows."""
    path = Path(path)
    if not path.exists():
        raise BagError(f'no bag at {path}')
    store = typestore()
    try:
        with Reader(path) as reader:
            topics = {c.topic: c.msgtype for c in reader.connections}
            cameras = episode_topics(topics, path)
            wanted = {*TOPIC_TYPES, *cameras}
            if topics.get(chunk_stats_topic) == CHUNK_STATS_TYPE:
                wanted.add(chunk_stats_topic)
            if topics.get(EPISODE_STATS_TOPIC) == PROVENANCE_TOPIC_TYPES[EPISODE_STATS_TOPIC]:
                wanted.add(EPISODE_STATS_TOPIC)   # the steps policy_node counted: its end-of-episode hold is none
            messages: dict[str, list] = {t: [] for t in wanted | {chunk_stats_topic}}
            recorded = {chunk_stats_topic, EPISODE_STATS_TOPIC}   # their fields grow between versions
            stores = {c.id: _recorded_store(c) if c.topic in recorded else store for c in reader.connections}
            for connection, log_ns, raw in reader.messages([c for c in reader.connections if c.topic in wanted]):
                decoded = stores[connection.id].deserialize_cdr(raw, connection.msgtype)
                messages[connection.topic].append((log_ns, decoded))
    except BagError:
        raise
    except Exception as err:  # a damaged file fails deep inside rosbags/mcap/zstd in many ways
        raise UnreadableBagError(f'cannot read the bag {path}: {type(err).__name__}: {err}') from err
    episode = episode_from_messages(path, messages, cameras, bag_custom_data(path) if path.is_dir() else {})
    stats = [m for _, m in sorted(messages[chunk_stats_topic], key=lambda s: _stamp_ns(s[1], s[0]))]
    windows = windows_from_chunk_stats(episode, stats) if stats else None
    if windows is not None:
        return PolicyEpisode(episode, windows, 'chunk_stats', str(path))
    return PolicyEpisode(episode, windows_from_commands(episode, messages, path), 'commands', str(path))


@dataclass
class PolicyBags:
    """What ``load_policy_bags`` found: the episodes, and (bag, why) of the bags it skipped."""

    episodes: list[PolicyEpisode] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    bags: int = 0


def load_policy_bags(roots, chunk_stats_topic: str = CHUNK_STATS_TOPIC, strict: bool = False) -> PolicyBags:
    """Every bag under ``roots`` (folders searched recursively, or bag paths) as a PolicyEpisode;
    a bag that yields none is skipped and listed (``strict``: raise BagError instead)."""
    found = PolicyBags()
    for root in ([roots] if isinstance(roots, (str, Path)) else roots):
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f'no bags at {root}')
        for bag in find_bags(root) if root.is_dir() else [root]:
            found.bags += 1
            try:
                found.episodes.append(read_policy_bag(bag, chunk_stats_topic))
            except BagError as err:
                if strict:
                    raise
                found.skipped.append((str(bag), str(err)))
    return found
