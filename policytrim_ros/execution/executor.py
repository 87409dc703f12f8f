"""Per-episode chunk execution bookkeeping: which window runs, how many steps and calls so far.

The executor is shared by the ROS policy node and the ROS-free episode loop, so both count steps
and inference calls the same way. Each inference call dispatches ONE window: the first
``n_action_steps`` (h) actions of the chunk (fewer if the episode's step limit is closer), as one
timed trajectory; with ``horizon: learned`` the caller passes each call's h (the efficiency head's).
The caller reports when the window ran (or how far, if the episode succeeded
mid-window) and asks for the next chunk.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policytrim_ros.execution.config import ExecutionConfig, SafetyConfig
from policytrim_ros.execution.metrics import EpisodeMetrics
from policytrim_ros.execution.safety import UnsafeChunkError, check_chunk
from policytrim_ros.execution.stitching import TIME_EPS, StaleChunkError, blended_rows, stitched_trajectory
from policytrim_ros.trajectory import WINDOW_ENDS, TimedTrajectory, window_trajectory


@dataclass(frozen=True)
class ChunkRecord:
    """One inference call (the ChunkStats message)."""

    episode_id: str
    call_index: int
    chunk_size: int
    n_action_steps: int
    first_step: int
    last_step: int
    inference_latency_s: float
    weights_version: int = 0
    sampling_seed: int = -1
    stale_steps: int = 0
    """Async inference: leading chunk rows skipped because their steps ran while the call thought."""


@dataclass
class _Episode:
    episode_id: str
    task: str
    instruction: str
    start_wall_time: float
    weights_version: int = 0
    sampling_seed: int = -1
    steps: int = 0
    inference_calls: int = 0


@dataclass(frozen=True)
class Window:
    """The window in flight: ``n_steps`` control steps starting at ``start_time``."""

    start_time: float
    n_steps: int
    dt: float

    @property
    def end_time(self) -> float:
        return self.start_time + self.n_steps * self.dt


class NoEpisodeError(RuntimeError):
    """An episode operation was called with no episode running."""


class ChunkExecutor:
    """Runs h of each H-step chunk and keeps the episode's step and call counts.

    ``window_end`` ('moving' or 'rest', see ``trajectory.WINDOW_ENDS``) is how each window's last
    knot ends; a node may change it between windows once it knows what the controller accepts.
    """

    def __init__(self, config: ExecutionConfig, joint_names: tuple[str, ...] | list[str],
                 safety: SafetyConfig | None = None, window_end: str = 'moving'):
        if window_end not in WINDOW_ENDS:
            raise ValueError(f"window_end '{window_end}' must be one of {list(WINDOW_ENDS)}")
        self.config = config
        self.joint_names = tuple(joint_names)
        self.safety = safety or SafetyConfig()
        self.safety.check_joints(self.joint_names)
        if config.replan_threshold and len(config.replan_threshold) != len(self.joint_names):
            raise ValueError(f'replan_threshold has {len(config.replan_threshold)} values for the '
                             f'{len(self.joint_names)} joints {list(self.joint_names)}: give one per joint')
        self._planned: np.ndarray | None = None   # the window's targets, one row per step
        self.window_end = window_end
        self._episode: _Episode | None = None
        self.window: Window | None = None
        self._reset_async()

    def _reset_async(self) -> None:
        self._trajectory: TimedTrajectory | None = None   # the last window's message, absolute times
        self._chunk: np.ndarray | None = None             # its whole chunk (H, A): the plan it blends from
        self._chunk_step = 0                               # the executed steps at its observation
        self._previous: Window | None = None              # the window the pending one takes over from

    # -- episode -------------------------------------------------------------------------------
    def start(self, episode_id: str, task: str, instruction: str, wall_time: float,
              weights_version: int = 0, sampling_seed: int = -1) -> None:
        """Begin a new episode (any previous one must have been finished); its metrics and every
        call's record carry ``weights_version`` and ``sampling_seed`` (provenance)."""
        self._episode = _Episode(episode_id, task, instruction, wall_time, weights_version, sampling_seed)
        self.window = None
        self._reset_async()

    @property
    def active(self) -> bool:
        return self._episode is not None

    @property
    def episode_id(self) -> str:
        return self._require().episode_id

    @property
    def steps(self) -> int:
        return self._require().steps

    @property
    def inference_calls(self) -> int:
        return self._require().inference_calls

    @property
    def out_of_steps(self) -> bool:
        """The step limit is reached and no window is pending."""
        return self.window is None and self.steps >= self.config.max_episode_steps

    def finish(self, success: bool, end_reason: str, wall_time: float) -> EpisodeMetrics:
        """End the episode and return its metrics."""
        ep = self._require()
        self._episode, self.window = None, None
        self._reset_async()
        cfg = self.config
        utilization = cfg.chunk_utilization
        if cfg.horizon != 'fixed' and ep.inference_calls:   # h varies: the mean executed h / H
            utilization = ep.steps / ep.inference_calls / cfg.chunk_size
        return EpisodeMetrics(
            episode_id=ep.episode_id, task=ep.task, instruction=ep.instruction, success=bool(success),
            steps=ep.steps, inference_calls=ep.inference_calls, n_action_steps=cfg.n_action_steps,
            chunk_size=cfg.chunk_size, chunk_utilization=utilization,
            wall_clock_s=max(0.0, wall_time - ep.start_wall_time), end_reason=end_reason,
            weights_version=ep.weights_version, sampling_seed=ep.sampling_seed)

    # -- windows -------------------------------------------------------------------------------
    def dispatch(self, chunk: np.ndarray, start_time: float, current_position: np.ndarray | None,
                 inference_latency_s: float, n_action_steps: int | None = None
                 ) -> tuple[TimedTrajectory, ChunkRecord]:
        """Check a fresh chunk (H, A) and turn its executed window into one trajectory.

        n_action_steps: this call's h, required with horizon learned (the efficiency head's pick,
        capped at the config's n_action_steps) and refused otherwise. The window is h steps, fewer
        if the episode's step limit is closer.

        Raises UnsafeChunkError (nothing is counted or sent) for a wrong shape, NaN/inf anywhere in
        the chunk, or a safety-limit violation in the steps that shape the trajectory: the h
        executed targets and the next one (it sets the last knot's velocity). Targets past those
        are never sent, so a far-future step of a short window cannot veto it. ``start_time`` is
        when the window starts, in the controller's clock.
        """
        ep = self._require()
        if self.window is not None:
            raise RuntimeError('dispatch() called while a window is still in flight')
        chunk = self._checked_chunk(chunk)
        n = min(self._window_length(n_action_steps), self.config.max_episode_steps - ep.steps)
        if n < 1:
            raise RuntimeError('the episode is out of steps; finish() it instead of dispatching')
        shaping = chunk[:n + 1]   # window_trajectory reads no further
        shaping = check_chunk(shaping, current_position, self.joint_names, self.config.control_dt, self.safety)
        traj = window_trajectory(shaping, n, self.config.control_dt, self.joint_names, start_time=start_time,
                                 window_end=self.window_end)
        return traj, self._commit(chunk, ep.steps, traj, float(start_time), n, inference_latency_s, 0)

    def dispatch_async(self, chunk: np.ndarray, observation_step: int, send_time: float,
                       current_position: np.ndarray | None, inference_latency_s: float,
                       n_action_steps: int | None = None) -> tuple[TimedTrajectory, ChunkRecord]:
        """Async inference: hand over from the window in flight to a chunk planned from the observation
        taken after ``observation_step`` executed steps; ``send_time`` is now, in the controller's clock.

        If the window in flight still runs at ``send_time``, the new one takes over at its end and the
        message repeats its remaining knots first (``stitching``); if it has ended (or there is none) the
        new one starts at ``send_time`` from where the arm holds. The chunk's rows for steps that ran
        since the observation are skipped (``ChunkRecord.stale_steps``); the window runs the next h
        rows (fewer if the chunk or the episode's step limit is closer), the first blended with the
        previous chunk's plan (``async_blend_steps``). The window in flight is counted as run (all its
        steps; ``end_window_at`` takes back any that the episode's end cut off).

        Raises StaleChunkError when every row of the chunk is stale, UnsafeChunkError as ``dispatch``
        does (the checked rows are the executed ones and the next); nothing is counted or changed then.
        """
        ep, cfg = self._require(), self.config
        if not cfg.async_inference:
            raise RuntimeError('dispatch_async() needs execution.async_inference')
        chunk = self._checked_chunk(chunk)
        h = self._window_length(n_action_steps)
        previous = self.window
        if previous is not None and previous.start_time > send_time + TIME_EPS:
            raise RuntimeError('dispatch_async() called while the next window is already queued')
        done = ep.steps + (previous.n_steps if previous is not None else 0)
        stale = max(0, done - int(observation_step))
        n = min(h, cfg.chunk_size - stale, cfg.max_episode_steps - done)
        if cfg.max_episode_steps - done < 1:
            raise RuntimeError('the episode is out of steps; finish() it instead of dispatching')
        if n < 1:
            raise StaleChunkError(f'all {cfg.chunk_size} actions of the chunk are stale: {stale} steps ran since '
                                  'its observation (the call took longer than its chunk lasts)')
        running = previous is not None and previous.end_time > send_time + TIME_EPS
        takeover = previous.end_time if running else float(send_time)
        reference = (self._trajectory.positions[-1] if self._trajectory is not None else current_position)
        rows = blended_rows(chunk[stale:stale + n], done, self._chunk, self._chunk_step, cfg.async_blend_steps)
        next_row = chunk[stale + n] if stale + n < cfg.chunk_size else None
        shaping = rows if next_row is None else np.vstack([rows, next_row])
        shaping = check_chunk(shaping, reference, self.joint_names, cfg.control_dt, self.safety)
        traj = stitched_trajectory(self._trajectory if running else None, takeover, send_time, shaping[:n],
                                   None if next_row is None else shaping[n],
                                   reference if reference is not None else shaping[0], cfg.control_dt,
                                   self.joint_names, self.window_end)
        if previous is not None:   # counted as run; end_window_at() takes back what the end cut off
            ep.steps += previous.n_steps
        self.window = None
        self._previous = previous if running else None
        record = self._commit(chunk, int(observation_step), traj, takeover, n, inference_latency_s, stale)
        return traj, record

    def _checked_chunk(self, chunk) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[0] != self.config.chunk_size:
            raise UnsafeChunkError(f'policy returned a chunk of shape {chunk.shape}; expected '
                                   f'({self.config.chunk_size}, {len(self.joint_names)}) (chunk_size H)')
        if not np.isfinite(chunk).all():
            step, col = np.argwhere(~np.isfinite(chunk))[0]
            raise UnsafeChunkError(f'chunk has NaN/inf at step {step}, joint {self.joint_names[col]}')
        return chunk

    def _window_length(self, n_action_steps: int | None) -> int:
        """This call's h: the config's, or the efficiency head's (capped) with horizon learned."""
        learned = self.config.horizon == 'learned'
        if learned != (n_action_steps is not None):
            raise ValueError(f'n_action_steps per call is given with horizon learned only (horizon is '
                             f'{self.config.horizon}, n_action_steps {n_action_steps})')
        h = self.config.n_action_steps
        if learned:
            if isinstance(n_action_steps, bool) or not 1 <= int(n_action_steps) <= self.config.chunk_size:
                raise UnsafeChunkError(f'the efficiency head chose h = {n_action_steps}; it must be in [1, '
                                       f'chunk_size ({self.config.chunk_size})]')
            h = min(int(n_action_steps), h)
        return h

    def _commit(self, chunk: np.ndarray, observation_step: int, traj: TimedTrajectory, start_time: float,
                n: int, latency: float, stale: int) -> ChunkRecord:
        """Count the call and make its window the one in flight."""
        ep = self._episode
        record = ChunkRecord(ep.episode_id, ep.inference_calls, self.config.chunk_size, n,
                             ep.steps, ep.steps + n - 1, float(latency), ep.weights_version,
                             ep.sampling_seed, stale)
        ep.inference_calls += 1
        self.window = Window(float(start_time), n, self.config.control_dt)
        self._planned = traj.positions[-n:]
        self._trajectory = traj if traj.start_time is not None else None
        self._chunk, self._chunk_step = chunk, observation_step
        return record

    def diverged(self, executed: int, measured: np.ndarray) -> bool:
        """With horizon divergence: whether the window should be cut after ``executed`` of its
        steps, the joints measured then at ``measured`` (its own planned targets being the
        reference: knot ``executed - 1``). Never before replan_min_steps, never at its last step."""
        cfg, w = self.config, self.window
        if cfg.horizon != 'divergence' or w is None or not cfg.replan_min_steps <= executed < w.n_steps:
            return False
        threshold = np.asarray(cfg.replan_threshold)
        error = np.abs(np.asarray(measured, dtype=np.float64) - self._planned[executed - 1])
        return bool(np.any((threshold > 0) & (error > threshold)))

    def steps_at(self, time: float) -> int:
        """Steps of the pending window executed by ``time`` (for a success seen mid-window)."""
        w = self.window
        if w is None:
            return 0
        return int(np.clip(round((time - w.start_time) / w.dt), 0, w.n_steps))

    def complete_window(self, executed_steps: int | None = None) -> None:
        """Account the pending window as run (all of it, or ``executed_steps`` of it)."""
        ep = self._require()
        if self.window is None:
            return
        n = self.window.n_steps if executed_steps is None else int(np.clip(executed_steps, 0, self.window.n_steps))
        ep.steps += n
        self.window, self._previous = None, None

    def end_window_at(self, time: float) -> None:
        """The episode ended at ``time`` (success/failure seen by the environment).

        Steps of the pending window executed by then are counted. A window that starts at or after
        ``time`` was planned from an observation taken after the episode had already ended (the end
        event and the observation raced): that call is not counted, as the ROS-free loop would
        never have made it.
        """
        ep = self._require()
        w = self.window
        if w is not None and w.start_time >= time - 1e-9:
            ep.inference_calls -= 1
            self.window = None
            previous, self._previous = self._previous, None
            if previous is not None:   # async: counted as run when the pending window was sent
                ran = int(np.clip(round((time - previous.start_time) / previous.dt), 0, previous.n_steps))
                ep.steps -= previous.n_steps - ran
        else:
            self.complete_window(self.steps_at(time))

    def _require(self) -> _Episode:
        if self._episode is None:
            raise NoEpisodeError('no episode is running')
        return self._episode

