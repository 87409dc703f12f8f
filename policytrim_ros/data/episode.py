"""``Episode``: one recorded episode as aligned per-step arrays (demonstration or policy rollout)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policytrim_ros.execution.executor import ChunkRecord
from policytrim_ros.execution.metrics import EpisodeMetrics


@dataclass(frozen=True)
class Episode:
    """A recorded episode; row t of every array belongs to control step t.

    task: task name, e.g. 'pick_place' (embedded arm) or 'pick-place-v3' (Meta-World).
    instruction: the language instruction given to the operator or policy.
    seed: episode seed (-1 when unknown, e.g. a bag recorded on a real robot).
    style: who acted: an operator style ('efficient', 'teleop'), 'policy', or 'recorded'.
    success: whether the episode ended in success.
    control_dt: seconds per control step.
    joint_names: (A,) names of the columns of ``joint_positions`` and ``actions`` (Meta-World: its
        action columns dx, dy, dz, grip).
    images: (T, H, N * W, 3) uint8 RGB image observed at the start of step t: the N cameras tiled
        left to right (Observation.image).
    joint_positions: (T, A) float64 observed (noisy) joint positions at the start of step t
        (rad; gripper opening in m; Meta-World: hand xyz in m and gripper opening 0-1).
    actions: (T, A) float64 absolute joint targets commanded for step t (reached at its end;
        Meta-World: hand motion in cm per step and gripper effort, in [-1, 1]).
    times: (T,) float64 seconds since the episode start at which step t began (ns resolution).
    call_index: (T,) int64 inference call (command message) that produced the action of step t:
        arange(T) for operator demonstrations, repeated runs of h for chunked policy rollouts.
    cameras: the N cameras that took the images, in tile order (their Image messages' frame_id);
        () when unknown (then N = 1).
    calls: provenance of a policy rollout recorded with its ChunkStats, one per inference call in
        call order: the steps its window covered (first_step..last_step), h, H, the weights
        version, the sampling seed and the latency; () when the bag has none (demonstrations).
    stats: the episode's EpisodeStats as policy_node published it (success, steps,
        inference_calls, end_reason, weights_version, sampling_seed, ...); None when not recorded.
    """

    task: str
    instruction: str
    seed: int
    style: str
    success: bool
    control_dt: float
    joint_names: tuple[str, ...]
    images: np.ndarray
    joint_positions: np.ndarray
    actions: np.ndarray
    times: np.ndarray
    call_index: np.ndarray
    cameras: tuple[str, ...] = ()
    calls: tuple[ChunkRecord, ...] = ()
    stats: EpisodeMetrics | None = None

    def __post_init__(self) -> None:
        t = len(self.actions)
        a = len(self.joint_names)
        if t == 0:
            raise ValueError('an episode needs at least one step (actions is empty)')
        shapes = {'images': (self.images, 4), 'joint_positions': (self.joint_positions, 2),
                  'actions': (self.actions, 2), 'times': (self.times, 1), 'call_index': (self.call_index, 1)}
        for name, (array, ndim) in shapes.items():
            if array.ndim != ndim or len(array) != t:
                raise ValueError(f'{name} has shape {array.shape}; expected {ndim} dims with T = {t} rows')
        object.__setattr__(self, 'cameras', tuple(self.cameras))
        object.__setattr__(self, 'calls', tuple(self.calls))
        if self.images.shape[2] % max(1, len(self.cameras)):
            raise ValueError(f'images are {self.images.shape[2]} px wide: not {len(self.cameras)} equal tiles, '
                             f'one per camera {list(self.cameras)}')
        if self.images.shape[3] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f'images must be (T, H, W, 3) uint8, got {self.images.shape} '
                             f'{self.images.dtype}')
        for name in ('joint_positions', 'actions'):
            if getattr(self, name).shape[1] != a:
                raise ValueError(f'{name} has {getattr(self, name).shape[1]} columns for {a} joint names')
        if not self.control_dt > 0:
            raise ValueError(f'control_dt ({self.control_dt}) must be > 0 seconds')
        if np.any(np.diff(self.call_index) < 0):
            raise ValueError('call_index must be non-decreasing')

    @property
    def steps(self) -> int:
        """T, control steps recorded."""
        return len(self.actions)

    @property
    def episode_id(self) -> str:
        """'<task>/<style>-<seed>', also the bag's path below a demonstrations root."""
        return f'{self.task}/{self.style}-{self.seed}'
