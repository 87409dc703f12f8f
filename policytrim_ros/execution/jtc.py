"""What a real ros2_control joint_trajectory_controller (JTC) accepts, per distro, numpy only.

A transcription of ``JointTrajectoryController::validate_trajectory_msg`` (ros2_controllers humble
2.x, jazzy 4.x, kilted 5.x; the topic and the FollowJointTrajectory action share it) so the
embedded simulator can be exactly as strict as a real arm and tests can check every message the
nodes send. The rules read the message duck-typed (``joint_names``, ``points[i].positions``,
``velocities``, ``accelerations``, ``effort``, ``time_from_start.sec/.nanosec``,
``header.stamp.sec/.nanosec``): rclpy messages and rosbags' deserialized ones both fit, and this
module stays free of ROS imports.

The parameters that decide acceptance, with each distro's default:

| parameter                                  | humble | jazzy | kilted |
|--------------------------------------------|--------|-------|--------|
| allow_nonzero_velocity_at_trajectory_end   | true   | false | false  |
| allow_partial_joints_goal                  | false  | false | false  |
| allow_integration_in_goal_trajectories     | false  | false | false  |

On every distro an empty trajectory is rejected ("Empty trajectory received."), also on the topic:
a hold is a one-point trajectory at the measured positions with zero velocity
(:func:`policytrim_ros.trajectory.hold_trajectory`), or a cancel of the active goal.
Beyond the real controller this check also rejects duplicate joint names and NaN/inf values
(``strict``): a real JTC would execute them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from policytrim_ros.config import suggest

DISTROS = ('humble', 'jazzy', 'kilted')
PARAMETERS = ('allow_nonzero_velocity_at_trajectory_end', 'allow_partial_joints_goal',
              'allow_integration_in_goal_trajectories')
"""The JTC parameters (the controller node's own names) that decide whether a message is accepted."""
_DEFAULTS = {
    'humble': dict(allow_nonzero_velocity_at_trajectory_end=True),
    'jazzy': dict(allow_nonzero_velocity_at_trajectory_end=False),
    'kilted': dict(allow_nonzero_velocity_at_trajectory_end=False),
}
_FLOAT_EPSILON = 1.1920928955078125e-07   # std::numeric_limits<float>::epsilon(), JTC's "zero"

# FollowJointTrajectory result codes (control_msgs), what a JTC reports
SUCCESSFUL, INVALID_GOAL, INVALID_JOINTS, OLD_HEADER_TIMESTAMP = 0, -1, -2, -3
PATH_TOLERANCE_VIOLATED, GOAL_TOLERANCE_VIOLATED = -4, -5
PREEMPTED_MESSAGE = 'Current goal preempted by new incoming action.'
"""The error_string a JTC aborts an active goal with when a newer goal replaces it."""


@dataclass(frozen=True)
class ControllerRules:
    """The settings of one joint_trajectory_controller that decide what it accepts.

    joints: the controller's ``joints`` parameter.
    allow_nonzero_velocity_at_trajectory_end: accept a last point that still moves.
    allow_partial_joints_goal: accept messages naming a subset of ``joints``.
    allow_integration_in_goal_trajectories: accept points without positions.
    effort_interface: the controller commands effort (only then may points carry effort).
    strict: also reject duplicate joint names and NaN/inf values (a real JTC executes them).
    """

    joints: tuple[str, ...]
    allow_nonzero_velocity_at_trajectory_end: bool
    allow_partial_joints_goal: bool = False
    allow_integration_in_goal_trajectories: bool = False
    effort_interface: bool = False
    strict: bool = True

    def __post_init__(self):
        if not self.joints or len(set(self.joints)) != len(self.joints):
            raise ValueError(f'joints {list(self.joints)} must be non-empty and unique')

    @classmethod
    def for_distro(cls, distro: str, joints, **parameters) -> 'ControllerRules':
        """A controller with ``distro``'s defaults, overridden by ``parameters`` (JTC names)."""
        if distro not in DISTROS:
            raise ValueError(f"distro '{distro}' must be one of {list(DISTROS)}{suggest(distro, DISTROS)}")
        return cls(joints=tuple(joints), **{**_DEFAULTS[distro], **parameters})


def _seconds(t) -> float:
    return t.sec + t.nanosec * 1e-9


def rejection(msg, rules: ControllerRules, now: float | None = None) -> str | None:
    """Why a JTC with ``rules`` rejects the JointTrajectory ``msg`` (its own words), or None.

    ``now`` (seconds, the controller's clock) enables the one time-dependent rule: a message with a
    non-zero stamp whose last point is already in the past is rejected. None skips it (an offline
    check of recorded messages).
    """
    names = list(msg.joint_names)
    if not rules.allow_partial_joints_goal and len(names) != len(rules.joints):
        return "Joints on incoming trajectory don't match the controller joints."
    if not names:
        return 'Empty joint names on incoming trajectory.'
    if not msg.points:
        return 'Empty trajectory received.'
    for name in names:
        if name not in rules.joints:
            return f"Incoming joint {name} doesn't match the controller's joints."
    if rules.strict and len(set(names)) != len(names):
        return f'Duplicate joint names on incoming trajectory: {names} (strict check)'
    last = msg.points[-1]
    if not rules.allow_nonzero_velocity_at_trajectory_end:
        for name, v in zip(names, last.velocities):
            if abs(v) > _FLOAT_EPSILON:
                return f'Velocity of last trajectory point of joint {name} is not zero: {v:.15f}'
    stamp = _seconds(msg.header.stamp)
    if now is not None and stamp != 0.0 and stamp + _seconds(last.time_from_start) < now:
        return (f'Received trajectory with non-zero start time ({stamp:f}) that ends in the past '
                f'({stamp + _seconds(last.time_from_start):f})')
    previous = 0.0
    n = len(names)
    for i, point in enumerate(msg.points):
        t = _seconds(point.time_from_start)
        if i > 0 and t <= previous:
            return (f'Time between points {i - 1} and {i} is not strictly increasing, it is {previous:f} '
                    f'and {t:f} respectively')
        previous = t
        fields = (('positions', point.positions), ('velocities', point.velocities),
                  ('accelerations', point.accelerations))
        if rules.allow_integration_in_goal_trajectories:
            if not any(len(values) for _, values in fields):
                return 'The given trajectory has no position, velocity, or acceleration points.'
            may_be_empty = {'positions', 'velocities', 'accelerations'}
        else:
            may_be_empty = {'velocities', 'accelerations'}
        for field, values in fields:
            if len(values) == 0 and field in may_be_empty:
                continue
            if len(values) != n:
                return (f'Mismatch between joint_names size ({n}) and {field} ({len(values)}) at '
                        f'point #{i}.')
        if len(point.effort) and not rules.effort_interface:
            return ("Trajectories with effort fields are only supported for controllers using the "
                    "'effort' command interface.")
        if rules.strict and not all(math.isfinite(v) for _, values in fields for v in values):
            return f'Point #{i} holds NaN or inf (strict check)'
    return None
