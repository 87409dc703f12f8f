"""Joint trajectories in joint_trajectory_controller (JTC) form, numpy only.

A chunk's executed window becomes ONE timed trajectory: knot i at ``time_from_start = (i+1)*dt``
with positions and velocities, so a JTC (or the embedded sim, which follows the same rules)
interpolates it with cubic splines instead of jerking from knot to knot. Sampling follows JTC's
semantics: start from the state the arm is in when the trajectory begins, cubic Hermite between
knots, hold the last knot afterwards. A leaf of the package: the executor builds these, the
simulated arms (``envs``) and the ROS conversions (``nodes``) follow or send them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class TrajectoryError(ValueError):
    """A trajectory JTC would reject; the message says why."""


@dataclass(frozen=True)
class TimedTrajectory:
    """Knots of a joint trajectory.

    joint_names: (A,) names, in the order of the columns below.
    times_from_start: (N,) seconds after the trajectory start, strictly increasing, >= 0.
    positions: (N, A) joint positions (rad, or m for prismatic joints).
    velocities: (N, A) joint velocities, or None (then sampling is piecewise linear).
    start_time: absolute start time in the receiver's clock (s); None means "start on arrival"
        (JTC's ``header.stamp == 0``).
    """

    joint_names: tuple[str, ...]
    times_from_start: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray | None = None
    start_time: float | None = None

    @property
    def duration(self) -> float:
        """Seconds from the start to the last knot."""
        return float(self.times_from_start[-1])

    def __len__(self) -> int:
        return len(self.times_from_start)


WINDOW_ENDS = ('moving', 'rest')
"""How a window's last knot ends: ``moving`` at the chunk's own velocity (seamless into the next
window; a JTC needs ``allow_nonzero_velocity_at_trajectory_end: true``, Humble's default), or at
``rest`` (zero velocity: accepted by every distro's default controller, stop-and-go at seams)."""


def window_trajectory(chunk: np.ndarray, n_action_steps: int, dt: float,
                      joint_names: tuple[str, ...] | list[str],
                      start_time: float | None = None, window_end: str = 'moving') -> TimedTrajectory:
    """Build the trajectory for the first ``n_action_steps`` actions of a chunk.

    chunk: (H, A) absolute joint position targets, one per control step of ``dt`` seconds.
    Knot i is chunk[i] at (i+1)*dt. Velocities are central differences over the whole chunk, so the
    last executed knot uses the next predicted action and leaves the window moving the way the
    policy intended (smooth seam into the next window); the chunk's final knot uses a backward
    difference. ``window_end`` 'rest' sets the last knot's velocity to zero instead (WINDOW_ENDS).
    """
    if window_end not in WINDOW_ENDS:
        raise TrajectoryError(f"window_end '{window_end}' must be one of {list(WINDOW_ENDS)}")
    chunk = np.asarray(chunk, dtype=np.float64)
    if chunk.ndim != 2:
        raise TrajectoryError(f'chunk must be (H, A), got shape {chunk.shape}')
    h = int(n_action_steps)
    if not 1 <= h <= len(chunk):
        raise TrajectoryError(f'n_action_steps ({h}) must be in [1, chunk_size ({len(chunk)})]')
    if len(joint_names) != chunk.shape[1]:
        raise TrajectoryError(f'chunk has {chunk.shape[1]} columns but {len(joint_names)} joint names')
    if not np.isfinite(chunk).all():
        raise TrajectoryError('chunk contains NaN or inf')
    padded = np.concatenate([chunk[:1], chunk, chunk[-1:]], axis=0)
    velocities = (padded[2:] - padded[:-2]) / (2.0 * dt)
    velocities[-1] = (chunk[-1] - chunk[-2]) / dt if len(chunk) > 1 else 0.0
    velocities = velocities[:h].copy()
    if window_end == 'rest':
        velocities[-1] = 0.0
    return TimedTrajectory(
        joint_names=tuple(joint_names),
        times_from_start=dt * np.arange(1, h + 1, dtype=np.float64),
        positions=chunk[:h].copy(),
        velocities=velocities,
        start_time=start_time,
    )


def hold_trajectory(positions: np.ndarray, joint_names: tuple[str, ...] | list[str],
                    duration: float) -> TimedTrajectory:
    """The hold every distro's JTC accepts: one knot at ``positions`` (the measured ones) with zero
    velocity, ``duration`` after its arrival (stamp 0). It replaces the running trajectory, so the
    arm stops where it is; an empty trajectory would be rejected and leave the old one running."""
    positions = np.asarray(positions, dtype=np.float64).reshape(1, -1)
    if positions.shape[1] != len(joint_names) or not np.isfinite(positions).all():
        raise TrajectoryError(f'hold positions {positions.ravel().tolist()} must be finite, one per joint '
                              f'of {list(joint_names)}')
    if not duration > 0:
        raise TrajectoryError(f'hold duration ({duration}) must be > 0 seconds')
    return TimedTrajectory(joint_names=tuple(joint_names), times_from_start=np.array([float(duration)]),
                           positions=positions, velocities=np.zeros_like(positions))


def validate_trajectory(traj: TimedTrajectory, joint_names: tuple[str, ...] | list[str]) -> TimedTrajectory:
    """Check a received trajectory the way JTC does; return it with columns in ``joint_names`` order.

    Raises TrajectoryError naming the first problem: missing/unknown/duplicate joints (partial goals
    are not allowed), no points, time_from_start not strictly increasing or negative, wrong row
    sizes, NaN/inf.
    """
    names = list(traj.joint_names)
    expected = list(joint_names)
    if len(set(names)) != len(names):
        raise TrajectoryError(f'duplicate joint names: {names}')
    missing = [n for n in expected if n not in names]
    unknown = [n for n in names if n not in expected]
    if missing or unknown:
        raise TrajectoryError(f'joint names must match the controller joints {expected}: '
                              f'missing {missing}, unknown {unknown}')
    times = np.asarray(traj.times_from_start, dtype=np.float64)
    if times.ndim != 1 or len(times) == 0:
        raise TrajectoryError('trajectory has no points')
    if not np.isfinite(times).all() or times[0] < 0 or np.any(np.diff(times) <= 0):
        raise TrajectoryError(f'time_from_start must be >= 0 and strictly increasing, got {times.tolist()}')
    positions = np.asarray(traj.positions, dtype=np.float64)
    if positions.shape != (len(times), len(names)):
        raise TrajectoryError(f'positions must be ({len(times)}, {len(names)}), got {positions.shape}')
    velocities = traj.velocities
    if velocities is not None:
        velocities = np.asarray(velocities, dtype=np.float64)
        if velocities.shape != positions.shape:
            raise TrajectoryError(f'velocities must be {positions.shape}, got {velocities.shape}')
    if not np.isfinite(positions).all() or (velocities is not None and not np.isfinite(velocities).all()):
        raise TrajectoryError('trajectory contains NaN or inf')
    order = [names.index(n) for n in expected]
    return TimedTrajectory(
        joint_names=tuple(expected),
        times_from_start=times,
        positions=positions[:, order],
        velocities=None if velocities is None else velocities[:, order],
        start_time=traj.start_time,
    )


def sample_trajectory(traj: TimedTrajectory, t: float | np.ndarray, start_position: np.ndarray,
                      start_velocity: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Desired (position, velocity) at ``t`` seconds after the trajectory start.

    t: a float, giving (A,) each, or (S,) times, giving (S, A) each; row i holds exactly the floats
    a call at t[i] alone gives, so sampling a whole control step at once changes no bit.
    Before the first knot the segment starts from (start_position, start_velocity), the state the
    arm was commanded to when this trajectory took over. Cubic Hermite between knots when velocities
    are given, linear otherwise. After the last knot: hold its position with zero velocity.
    """
    times = traj.times_from_start
    p0 = np.asarray(start_position, dtype=np.float64)
    v0 = np.zeros_like(p0) if start_velocity is None else np.asarray(start_velocity, dtype=np.float64)
    ts = np.atleast_1d(np.asarray(t, dtype=np.float64))
    held, started = ts >= times[-1], ts <= 0.0
    pos = np.where(held[:, None], traj.positions[-1], p0)
    vel = np.where(held[:, None], 0.0, v0)
    inside = ~held & ~started
    if inside.any():
        pos[inside], vel[inside] = _sample_segments(traj, ts[inside], p0, v0)
    return (pos[0], vel[0]) if np.ndim(t) == 0 else (pos, vel)


def _sample_segments(traj: TimedTrajectory, ts: np.ndarray, p0: np.ndarray,
                     v0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S, A) positions and velocities at ``ts`` (S,), each strictly between 0 and the last knot."""
    # the start state is knot 0 of these, at time 0: segment k runs from knot k to knot k + 1
    knot_times = np.concatenate([[0.0], traj.times_from_start])
    k = np.searchsorted(traj.times_from_start, ts, side='right')
    ta, tb = knot_times[k], knot_times[k + 1]
    pa, pb = np.vstack([p0, traj.positions])[k], traj.positions[k]
    span = tb - ta
    s = (ts - ta) / span
    if traj.velocities is None:
        return pa + s[:, None] * (pb - pa), (pb - pa) / span[:, None]
    va, vb = np.vstack([v0, traj.velocities])[k], traj.velocities[k]
    # libm's pow per sample, as Python floats: numpy's vectorized power rounds differently (SIMD)
    s2 = np.array([x**2 for x in s.tolist()])
    s3 = np.array([x**3 for x in s.tolist()])
    h00, h10, h01, h11 = 2 * s3 - 3 * s2 + 1, s3 - 2 * s2 + s, -2 * s3 + 3 * s2, s3 - s2
    d00, d10, d01, d11 = 6 * s2 - 6 * s, 3 * s2 - 4 * s + 1, -6 * s2 + 6 * s, 3 * s2 - 2 * s
    c = lambda w: w[:, None]  # noqa: E731  (S,) weights times (S, A) knots, row by row
    pos = c(h00) * pa + c(h10 * span) * va + c(h01) * pb + c(h11 * span) * vb
    vel = (c(d00) * pa + c(d10 * span) * va + c(d01) * pb + c(d11 * span) * vb) / c(span)
    return pos, vel
