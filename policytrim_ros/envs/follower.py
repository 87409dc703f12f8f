"""The embedded arm's trajectory follower: joint_trajectory_controller (JTC) semantics, numpy only.

A trajectory is validated and rejected whole, replaces whatever remains of the current one, may
start later (deferred start times), starts from the commanded state it takes over (smooth
takeover), and its last knot is held afterwards. ``ArmEnv`` samples the follower at every physics
step of a control step in one call and drives its actuators with the commanded position and velocity.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policytrim_ros.trajectory import TimedTrajectory, sample_trajectory, validate_trajectory


@dataclass(frozen=True)
class _ActiveTrajectory:
    """A trajectory being executed: started at ``start`` (env s) from the commanded state."""

    trajectory: TimedTrajectory
    start: float
    start_position: np.ndarray
    start_velocity: np.ndarray


class TrajectoryFollower:
    """The commanded position and velocity of ``joint_names`` (a JTC's desired state) over time.

    time_tolerance: times closer than this (s) are the same instant.
    """

    def __init__(self, joint_names: tuple[str, ...], time_tolerance: float) -> None:
        self.joint_names = joint_names
        self.time_tolerance = time_tolerance
        self.position = np.zeros(len(joint_names))
        """(A,) commanded position."""
        self.velocity = np.zeros(len(joint_names))
        """(A,) commanded velocity."""
        self._active: _ActiveTrajectory | None = None
        self._pending: tuple[TimedTrajectory, float] | None = None

    def reset(self, position: np.ndarray) -> None:
        """Drop every trajectory and command ``position`` (A,) at rest."""
        self.position = position
        self.velocity = np.zeros(len(self.joint_names))
        self._active, self._pending = None, None

    def follow(self, traj: TimedTrajectory, now: float) -> None:
        """Execute ``traj``, replacing whatever remains of the current one (see ``ArmEnv.set_trajectory``).

        Raises TrajectoryError on a malformed trajectory and then changes nothing.
        """
        checked = validate_trajectory(traj, self.joint_names)
        start = now if checked.start_time is None else float(checked.start_time)
        if start > now + self.time_tolerance:
            self._pending = (checked, start)
        else:
            self._pending = None
            self._activate(checked, start, now)

    def hold(self) -> None:
        """Drop any trajectory and hold the commanded position, at zero velocity."""
        self._active, self._pending = None, None
        self.velocity = np.zeros(len(self.joint_names))

    def active(self, now: float) -> bool:
        """Whether a trajectory still has knots ahead at ``now`` (including one waiting for its start)."""
        if self._pending is not None:
            return True
        active = self._active
        if active is None:
            return False
        return now - active.start < active.trajectory.duration - self.time_tolerance

    def _activate(self, traj: TimedTrajectory, start: float, now: float) -> None:
        """Make ``traj`` the executed trajectory now, taking over from the commanded state."""
        if abs(start - now) <= self.time_tolerance:
            start = now  # snap to this physics step
        self._active = _ActiveTrajectory(traj, start, self.position.copy(), self.velocity.copy())

    def advance(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sample the commanded state at each of ``times`` (S,) (env s, increasing), in turn.

        Returns (S, A) positions and (S, A) velocities, row i the commanded state at times[i]: a
        pending trajectory starts at the first time it is due, one that reaches its last knot holds
        it from then on. The follower is left in its state at times[-1]. Sampling S times in one call
        gives the same floats, bit for bit, as S calls of one time each.
        """
        positions = np.empty((len(times), len(self.joint_names)))
        velocities = np.empty_like(positions)
        i = 0
        while i < len(times):
            if self._pending is not None and times[i] >= self._pending[1] - self.time_tolerance:
                self._activate(*self._pending, now=float(times[i]))
                self._pending = None
            end = len(times)   # the pending trajectory, if any, takes over at its first due time
            if self._pending is not None:
                due = np.flatnonzero(times[i:] >= self._pending[1] - self.time_tolerance)
                end = i + int(due[0]) if due.size else end
            self._follow_active(times[i:end], positions[i:end], velocities[i:end])
            i = end
        return positions, velocities

    def _follow_active(self, times: np.ndarray, positions: np.ndarray, velocities: np.ndarray) -> None:
        """Fill ``positions`` and ``velocities`` (S, A) with the active trajectory sampled at ``times``
        (S,), holding its last knot from the time it ends (or the commanded state when none runs)."""
        active = self._active
        running = 0
        if active is not None:
            elapsed = times - active.start
            ended = np.flatnonzero(elapsed >= active.trajectory.duration - self.time_tolerance)
            running = int(ended[0]) if ended.size else len(times)
            if running:
                positions[:running], velocities[:running] = sample_trajectory(
                    active.trajectory, elapsed[:running], active.start_position, active.start_velocity)
                self.position, self.velocity = positions[running - 1].copy(), velocities[running - 1].copy()
            if running < len(times):
                self.position = active.trajectory.positions[-1].copy()  # held from now on
                self.velocity = np.zeros(len(self.joint_names))
                self._active = None
        positions[running:], velocities[running:] = self.position, self.velocity
