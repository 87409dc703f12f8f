"""Configs of chunk execution: how much of each chunk runs, how fast, and what is safe to send."""
from __future__ import annotations

import math
from dataclasses import dataclass

HORIZONS = ('fixed', 'learned', 'divergence')


@dataclass(frozen=True)
class ExecutionConfig:
    """How chunks are executed.

    chunk_size: H, actions the policy predicts per call (must match the policy).
    n_action_steps: h, actions executed open-loop before re-planning (1 <= h <= H); with horizon
        learned or divergence, the longest a window runs.
    control_dt: seconds per physical control step (1 / control rate).
    max_episode_steps: physical steps after which an unfinished episode ends (end_reason max_steps).
    horizon: fixed (every window runs h steps), learned (each window runs the h the checkpoint's
        efficiency head picks for its chunk, at most n_action_steps) or divergence (a window is cut
        and the policy called again as soon as, after replan_min_steps, the measured joint
        positions leave the window's planned targets by more than replan_threshold: training-free,
        state-dependent h).
    replan_threshold: per joint, in joint order (rad or m): the largest |measured - planned| a
        divergence window tolerates; 0 = not watched (e.g. a gripper that stops on the object).
    replan_min_steps: steps a divergence window always runs before it may be cut.
    async_inference: compute the next chunk while the current window runs (docs/async-inference.md):
        the call starts from the latest observation about one latency before the window ends, its
        stale actions (those for steps that ran while it thought) are skipped, and the new window
        takes over where the running one ends, stitched to it. Off by default: the chunk is then
        planned a few steps before the window ends instead of at its end. Not with horizon divergence.
    async_blend_steps: with async_inference, the first new knots are blended with the previous
        chunk's plan for the same steps, weights (B - j) / (B + 1) for knot j < B: the seam follows
        the old plan and hands over to the new one over B steps; 0 = no blend.
    """

    chunk_size: int = 16
    n_action_steps: int = 4
    control_dt: float = 0.1
    max_episode_steps: int = 150
    horizon: str = 'fixed'
    replan_threshold: tuple[float, ...] = ()
    replan_min_steps: int = 4
    async_inference: bool = False
    async_blend_steps: int = 3

    def __post_init__(self):
        if self.chunk_size < 1:
            raise ValueError(f'chunk_size ({self.chunk_size}) must be >= 1')
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ValueError(f'n_action_steps ({self.n_action_steps}) must be in [1, chunk_size '
                             f'({self.chunk_size})]')
        if not (math.isfinite(self.control_dt) and self.control_dt > 0):
            raise ValueError(f'control_dt ({self.control_dt}) must be > 0 seconds')
        if self.max_episode_steps < 1:
            raise ValueError(f'max_episode_steps ({self.max_episode_steps}) must be >= 1')
        if self.horizon not in HORIZONS:
            raise ValueError(f"horizon '{self.horizon}' must be one of {list(HORIZONS)}")
        if any(not (t >= 0 and math.isfinite(t)) for t in self.replan_threshold):
            raise ValueError(f'replan_threshold {list(self.replan_threshold)} must all be >= 0 (0 = not watched)')
        if self.horizon == 'divergence' and not any(t > 0 for t in self.replan_threshold):
            raise ValueError('horizon divergence needs replan_threshold: one value per joint, > 0 on the '
                             'joints to watch')
        if self.replan_min_steps < 1 or (self.horizon == 'divergence' and self.replan_min_steps > self.n_action_steps):
            raise ValueError(f'replan_min_steps ({self.replan_min_steps}) must be in [1, n_action_steps '
                             f'({self.n_action_steps})]')
        if self.async_inference and self.horizon == 'divergence':
            raise ValueError('async_inference runs each window to its end while the next chunk is computed; '
                             'horizon divergence cuts windows short: use horizon fixed or learned with it')
        if self.async_blend_steps < 0 or (self.async_inference and self.async_blend_steps > self.chunk_size):
            raise ValueError(f'async_blend_steps ({self.async_blend_steps}) must be in [0, chunk_size '
                             f'({self.chunk_size})]')

    @property
    def chunk_utilization(self) -> float:
        """h / H."""
        return self.n_action_steps / self.chunk_size


@dataclass(frozen=True)
class SafetyConfig:
    """Limits a chunk's sent steps are checked against before any of it moves (empty tuple = no check).

    position_lower, position_upper: per-joint position limits, in ``joint_names`` order (rad or m).
    max_velocity: per-joint speed limit (rad/s or m/s) between consecutive targets, including the
        jump from the measured position to the first target.
    position_margin: per-joint distance (rad or m) a target may lie beyond its position limit and
        still be clipped onto the limit instead of rejecting the chunk (a learned policy's gripper
        target of 0.0403 m for a 0.04 m limit); empty = reject any target outside the limits.
    """

    position_lower: tuple[float, ...] = ()
    position_upper: tuple[float, ...] = ()
    max_velocity: tuple[float, ...] = ()
    position_margin: tuple[float, ...] = ()

    def __post_init__(self):
        if len(self.position_lower) != len(self.position_upper):
            raise ValueError(f'position_lower ({len(self.position_lower)} values) and position_upper '
                             f'({len(self.position_upper)} values) must have the same length')
        for i, (lo, hi) in enumerate(zip(self.position_lower, self.position_upper)):
            if not lo < hi:
                raise ValueError(f'position_lower[{i}] ({lo}) must be < position_upper[{i}] ({hi})')
        if any(not (v > 0) for v in self.max_velocity):
            raise ValueError(f'max_velocity {list(self.max_velocity)} must all be > 0')
        if self.position_margin and len(self.position_margin) != len(self.position_lower):
            raise ValueError(f'position_margin ({len(self.position_margin)} values) needs one value per '
                             f'position limit ({len(self.position_lower)})')
        if any(not (m >= 0) for m in self.position_margin):
            raise ValueError(f'position_margin {list(self.position_margin)} must all be >= 0')

    def check_joints(self, joint_names) -> None:
        """Raise ValueError unless every non-empty limit list has one value per joint."""
        for name in ('position_lower', 'position_upper', 'max_velocity', 'position_margin'):
            values = getattr(self, name)
            if values and len(values) != len(joint_names):
                raise ValueError(f'safety.{name} has {len(values)} values {list(values)} for the '
                                 f'{len(joint_names)} joints {list(joint_names)}: give one per joint, in that order')
