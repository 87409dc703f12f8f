"""``ChunkDataset``: training windows (image, state, instruction, next H actions) from recorded episodes.

Every step t of every episode starts one window. All arrays live in memory (a 96x96 step is about
28 kB of image, so a few hundred episodes of up to 150 steps take a few hundred MB).

No bag is dropped in silence: a bag that does not open (truncated, corrupt, no metadata.yaml) is
salvaged when its MCAP file still holds an episode (``data.salvage``), and one that yields nothing
usable is skipped; both are listed, with the reason, in ``ChunkDataset.report`` and one
``BagWarning``. ``strict`` raises at the first such bag instead.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from policytrim_ros.data.bag import BagError, UnreadableBagError, bag_custom_data, read_episode_bag
from policytrim_ros.data.episode import Episode
from policytrim_ros.data.salvage import salvage_episode_bag
from policytrim_ros.envs.base import camera_tiles, select_tiles

_MIN_STD = 1e-6  # floor of the statistics' std, so normalizing a constant dimension stays finite


class BagWarning(UserWarning):
    """Demonstration bags were skipped, or only partly recovered, while loading a dataset."""


@dataclass
class LoadReport:
    """What loading demonstrations found.

    bags: bag directories (and bare bag files) found; skipped: (bag, why) of those that yielded no
    usable episode; recovered: (bag, what) of damaged ones salvaged (``data.salvage``); episodes,
    steps: what the dataset holds after the styles and success filters.
    """

    bags: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    recovered: list[tuple[str, str]] = field(default_factory=list)
    episodes: int = 0
    steps: int = 0

    def summary(self) -> str:
        """One line of counts, then one line per skipped or recovered bag with the reason."""
        lines = [f'{self.episodes} episodes, {self.steps} steps from {self.bags} bags; skipped {len(self.skipped)} '
                 f'of {self.bags} bags, recovered {len(self.recovered)} from damaged bags']
        lines += [f'  skipped {bag}: {why}' for bag, why in self.skipped]
        lines += [f'  recovered {bag}: {what}' for bag, what in self.recovered]
        return '\n'.join(lines)


def find_bags(root: str | Path) -> list[Path]:
    """Bag directories at or below ``root``, sorted: those with a metadata.yaml, and those holding
    .mcap or .db3 files without one (a recording that never finished, or lost it)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'no directory {root}')
    found = {meta.parent for meta in root.rglob('metadata.yaml')}
    found |= {storage.parent for pattern in ('*.mcap', '*.db3') for storage in root.rglob(pattern)}
    return [root] if root in found else sorted(found)


def _read_bag(bag: Path, strict: bool, report: LoadReport) -> Episode:
    """The episode of ``bag``, salvaged if the bag does not open (unless ``strict``); BagError if
    nothing usable is left."""
    if bag.is_dir() and not (bag / 'metadata.yaml').is_file():
        error: BagError = UnreadableBagError(f'{bag}: no metadata.yaml (rosbag2 writes it when a recording ends; '
                                             '`ros2 bag reindex` rebuilds it)')
    else:
        try:
            return read_episode_bag(bag)
        except UnreadableBagError as err:
            error = err
    if strict:
        raise error
    try:
        episode, note = salvage_episode_bag(bag)
    except BagError as err:
        raise BagError(f'{error}; salvaging it: {err}') from None
    report.recovered.append((str(bag), f'{error}; {note}'))
    return episode


def _resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, h, w, 3) uint8 -> (T, H, W, 3) uint8, area interpolation (antialiased when shrinking)."""
    import cv2  # only needed when resizing
    height, width = size
    return np.stack([cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA) for image in images])


class ChunkDataset:
    """Windows of ``chunk_size`` future actions over episodes, as numpy arrays (torch Dataset style).

    source: a demonstrations root (searched for bags), one bag directory, or a sequence of bag
        paths, roots or ``Episode`` objects.
    chunk_size: H, the number of future actions per window.
    image_size: (height, width) to resize images to, or None to keep the recorded size (all
        episodes must then share one size).
    styles: keep only bags whose custom_data style is one of these (None keeps all).
    cameras: train on these of the episodes' cameras, tiled in this order (None keeps the images
        as recorded); every episode must name them (``Episode.cameras``).
    only_successful: drop episodes that did not succeed.
    strict: raise BagError at the first bag that does not yield its whole episode (unreadable,
        damaged, missing topics or data) instead of salvaging what it holds or skipping it.

    Item i is a dict: image (h, w, 3) uint8 at step t; state (A,) float32 observed joint positions
    at t; instruction str; actions (H, A) float32 commanded targets of steps t..t+H-1, padded past
    the episode's end with its last action; action_mask (H,) bool, False on that padding.
    ``report`` (a LoadReport) says what was loaded, skipped and recovered.
    """

    def __init__(self, source: str | Path | Sequence[str | Path | Episode], chunk_size: int,
                 image_size: tuple[int, int] | None = None, styles: Sequence[str] | None = None,
                 only_successful: bool = True, cameras: Sequence[str] | None = None, strict: bool = False) -> None:
        if chunk_size < 1:
            raise ValueError(f'chunk_size ({chunk_size}) must be >= 1')
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
            raise ValueError(f'image_size ({image_size}) must be (height, width) in pixels')
        self.chunk_size = int(chunk_size)
        items = [source] if isinstance(source, (str, Path)) else list(source)
        self.report = LoadReport()
        episodes = [e for e in self._load(items, styles, strict, self.report) if e.success or not only_successful]
        self.report.episodes, self.report.steps = len(episodes), sum(e.steps for e in episodes)
        if self.report.skipped or self.report.recovered:
            warnings.warn(BagWarning(f'demonstrations in {source}: {self.report.summary()}'), stacklevel=2)
        if not episodes:
            raise ValueError(f'no episodes to train on in {source} (styles={styles}, '
                             f'only_successful={only_successful})')
        names = {e.joint_names for e in episodes}
        if len(names) != 1:
            raise ValueError(f'episodes have different joint names {sorted(names)}: a dataset holds the '
                             'episodes of one robot (the embedded arm or Meta-World)')
        self.joint_names: tuple[str, ...] = names.pop()
        if cameras:
            episodes = [self._select_cameras(e, tuple(cameras)) for e in episodes]
        images = [e.images if image_size is None or e.images.shape[1:3] == tuple(image_size)
                  else _resize(e.images, tuple(image_size)) for e in episodes]
        sizes = {i.shape[1:3] for i in images}
        if len(sizes) != 1:
            raise ValueError(f'episodes have different image sizes {sorted(sizes)}; pass image_size')
        self._images = self._pack(episodes, images)                                # (N, h, w, 3)
        self.episodes: list[Episode] = episodes
        self._states = np.concatenate([e.joint_positions for e in episodes]).astype(np.float32)  # (N, A)
        self._actions = np.concatenate([e.actions for e in episodes]).astype(np.float32)         # (N, A)
        lengths = np.array([e.steps for e in episodes])
        self._episode_of = np.repeat(np.arange(len(episodes)), lengths)           # (N,)
        self._episode_end = np.cumsum(lengths)                                     # (E,) exclusive ends

    @staticmethod
    def _pack(episodes: list[Episode], images: list[np.ndarray]) -> np.ndarray:
        """All ``images`` in one (N, h, w, 3) array; each of ``episodes`` is replaced, in place, by
        one whose images are a view of its rows. Each episode's own array is released as soon as
        it is copied, so the images are held once (plus one episode), not twice."""
        out = np.empty((sum(len(i) for i in images), *images[0].shape[1:]), dtype=images[0].dtype)
        start = 0
        for k, episode in enumerate(episodes):
            part, images[k] = images[k], None
            out[start:start + len(part)] = part
            episodes[k] = replace(episode, images=out[start:start + len(part)])
            start += len(part)
            del part, episode
        return out

    @staticmethod
    def _load(items: list[str | Path | Episode], styles: Sequence[str] | None, strict: bool,
              report: LoadReport) -> list[Episode]:
        episodes = []
        for item in items:
            if isinstance(item, Episode):
                if styles is None or item.style in styles:
                    episodes.append(item)
                continue
            path = Path(item)
            if not path.exists():
                raise FileNotFoundError(f'no demonstrations at {path}')
            bags = find_bags(path) if path.is_dir() else [path]
            report.bags += len(bags)
            for bag in bags:
                try:
                    custom = bag_custom_data(bag)
                except BagError:
                    custom = {}   # a corrupt metadata.yaml: reading the bag reports it
                if custom and styles is not None and custom.get('style', 'recorded') not in styles:
                    continue      # another style: not read at all
                try:
                    episode = _read_bag(bag, strict, report)
                except BagError as err:
                    if strict:
                        raise
                    report.skipped.append((str(bag), str(err)))
                    continue
                if styles is None or episode.style in styles:
                    episodes.append(episode)
        return episodes

    @staticmethod
    def _select_cameras(episode: Episode, cameras: tuple[str, ...]) -> Episode:
        if episode.cameras == cameras:
            return episode
        try:
            tiles = camera_tiles(episode.cameras, cameras)
        except ValueError as err:
            raise ValueError(f'episode {episode.episode_id}: {err}') from None
        return replace(episode, images=select_tiles(episode.images, len(episode.cameras), tiles), cameras=cameras)

    def __len__(self) -> int:
        return len(self._actions)

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f'window {index} out of range for {n} windows')
        t = int(index) % n
        end = self._episode_end[self._episode_of[t]]
        steps = t + np.arange(self.chunk_size)
        return {
            'image': self._images[t],
            'state': self._states[t],
            'instruction': self.episodes[self._episode_of[t]].instruction,
            'actions': self._actions[np.minimum(steps, end - 1)],
            'action_mask': steps < end,
        }

    def task_windows(self) -> dict[str, np.ndarray]:
        """{task: (n,) indices of its windows}, tasks sorted by name."""
        tasks = np.array([e.task for e in self.episodes])[self._episode_of]
        return {task: np.flatnonzero(tasks == task) for task in sorted(set(tasks.tolist()))}

    def instructions(self) -> list[str]:
        """The distinct instructions, sorted."""
        return sorted({e.instruction for e in self.episodes})

    def statistics(self, action_offsets: bool = True) -> dict[str, np.ndarray]:
        """Per-dimension normalization statistics, each (A,) float32, std floored at 1e-6.

        state_mean, state_std: over the observed joint positions of every step.
        delta_mean, delta_std: over actions[t + k] - state[t] for every unpadded (t, k) of the
            windows, i.e. the targets a chunk predicts relative to the state it starts from; over
            the actions themselves when ``action_offsets`` is False (velocity-like actions).
        step_delta_std: (H, A) the same std for each chunk step k alone (the first targets of a
            chunk lie much closer to the state than the last).
        action_min, action_max: the range of the commanded targets.
        """
        if action_offsets:
            deltas = []
            for k in range(self.chunk_size):
                t = np.arange(len(self) - k)
                valid = t + k < self._episode_end[self._episode_of[t]]
                deltas.append((self._actions[t[valid] + k] - self._states[t[valid]]).astype(np.float64))
            delta = np.concatenate(deltas)
            step_std = np.stack([d.std(0) if len(d) > 1 else delta.std(0) for d in deltas])
        else:
            delta = self._actions.astype(np.float64)
            step_std = np.repeat(delta.std(0)[None], self.chunk_size, axis=0)
        states = self._states.astype(np.float64)
        return {
            'state_mean': states.mean(0).astype(np.float32),
            'state_std': np.maximum(states.std(0), _MIN_STD).astype(np.float32),
            'delta_mean': delta.mean(0).astype(np.float32),
            'delta_std': np.maximum(delta.std(0), _MIN_STD).astype(np.float32),
            'step_delta_std': np.maximum(step_std, _MIN_STD).astype(np.float32),
            'action_min': self._actions.min(0).astype(np.float32),
            'action_max': self._actions.max(0).astype(np.float32),
        }
