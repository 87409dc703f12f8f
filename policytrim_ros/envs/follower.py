"""The embedded arm's trajectory follower: joint_trajectory_controller (JTC) semantics, numpy only.

A trajectory is validated and rejected whole, replaces whatever remains of the current one, may
start later (deferred start times), starts from the commanded state it takes over (smooth
takeover), and its last knot is held afterwards. ``ArmEnv`` samples the follower every physics
step and drives its actuators with the commanded position and velocity.
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

    def update(self, t: float) -> None:
        """Sample the trajectory at time ``t`` into the commanded state."""
        if self._pending is not None and t >= self._pending[1] - self.time_tolerance:
            self._activate(*self._pending, now=t)
            self._pending = None
        active = self._active
        if active is None:
            return
        elapsed = t - active.start
        if elapsed >= active.trajectory.duration - self.time_tolerance:
            self.position = active.trajectory.positions[-1].copy()  # held from now on
            self.velocity = np.zeros(len(self.joint_names))
            self._active = None
            return
        self.position, self.velocity = sample_trajectory(
            active.trajectory, elapsed, active.start_position, active.start_velocity)
