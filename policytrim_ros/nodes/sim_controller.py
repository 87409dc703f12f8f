"""The embedded arm's joint_trajectory_controller: a node named like the real controller, as strict.

sim_node runs this node in its own process, the way controller_manager runs a JTC: a node called
``<controller.name>`` (default ``arm_controller``) that holds the controller's own parameters
(``joints``, ``allow_nonzero_velocity_at_trajectory_end``, ... with the chosen distro's defaults,
overridden by the ``arm_controller:`` section of a ros2_control controllers file such as the
shipped config/controllers.yaml, sim_node's ``controller.params_file``), subscribes to ``<name>/joint_trajectory`` and serves
``<name>/follow_joint_trajectory`` (when control_msgs is importable). Every message and goal goes
through the real validator's rules (``execution.jtc``); what a real controller rejects is rejected
here too, with its words. Path tolerances (``constraints.<joint>.trajectory``) abort the running
goal with PATH_TOLERANCE_VIOLATED and hold; goal tolerances are not simulated.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.task import Future
from trajectory_msgs.msg import JointTrajectory

from policytrim_ros.config import ConfigError
from policytrim_ros.envs.arm import ArmEnv
from policytrim_ros.execution import jtc
from policytrim_ros.nodes import conversions as conv
from policytrim_ros.nodes.params import reject_unknown_overrides
from policytrim_ros.nodes.runtime import RELIABLE, CauseLog
from policytrim_ros.trajectory import TrajectoryError

try:   # control_msgs is not among the ros-* PyPI wheels; ../shared/ros2-extras builds Kilted's
    from control_msgs.action import FollowJointTrajectory
except ImportError:  # pragma: no cover - depends on the install
    FollowJointTrajectory = None

COMMAND_INTERFACES = (['position'], ['position', 'velocity'])


def _key(goal_handle) -> bytes:
    return bytes(goal_handle.goal_id.uuid)   # goal handles are not hashable


class SimController(Node):
    """Validates and executes trajectories on ``env`` like a JTC of ``distro``."""

    def __init__(self, name: str, distro: str, env: ArmEnv, parameters: dict, namespace: str,
                 now: Callable[[], float], clock_offset: Callable[[], float]):
        """``parameters``: the controller's own (flat ``constraints.joint1.trajectory`` names), from
        a controllers file, its only source, as with controller_manager: this process's command
        line (sim_node's -p and params files) does not reach this node; ``namespace`` does."""
        super().__init__(name, namespace=namespace, use_global_arguments=False,
                         parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
        self.env, self._now, self._clock_offset = env, now, clock_offset
        self.rejected = 0
        self.log = CauseLog(self.get_logger())
        defaults = jtc.ControllerRules.for_distro(distro, env.joint_names)
        declared = {
            'joints': list(env.joint_names),
            'command_interfaces': ['position'],
            'state_interfaces': ['position', 'velocity'],
            **{p: getattr(defaults, p) for p in jtc.PARAMETERS},
            'constraints.stopped_velocity_tolerance': 0.01,
            'constraints.goal_time': 0.0,
            'action_monitor_rate': 20.0,
        }
        for key, value in declared.items():
            self.declare_parameter(key, value, ParameterDescriptor(read_only=True))
        joints = tuple(self.get_parameter('joints').value)
        for joint in joints:
            self.declare_parameter(f'constraints.{joint}.trajectory', 0.0, ParameterDescriptor(read_only=True))
        reject_unknown_overrides(self, 'the simulated joint_trajectory_controller')
        if sorted(joints) != sorted(env.joint_names):
            raise ConfigError(f'{name}.joints {list(joints)} must name the arm\'s joints {list(env.joint_names)}')
        interfaces = list(self.get_parameter('command_interfaces').value)
        if interfaces not in COMMAND_INTERFACES:
            raise ConfigError(f'{name}.command_interfaces {interfaces} is not simulated; use one of '
                              f'{COMMAND_INTERFACES}')
        for p in ('allow_partial_joints_goal', 'allow_integration_in_goal_trajectories'):
            if self.get_parameter(p).value:
                raise ConfigError(f'{name}.{p}: true is not simulated (the policy sends every joint\'s positions)')
        self.rules = jtc.ControllerRules(
            joints=joints, allow_nonzero_velocity_at_trajectory_end=bool(
                self.get_parameter('allow_nonzero_velocity_at_trajectory_end').value))
        self.path_tolerance = np.array([self.get_parameter(f'constraints.{j}.trajectory').value
                                        for j in env.joint_names], dtype=np.float64)
        self._goal = None                  # the active goal's handle
        self._outcomes: dict = {}          # goal id -> Future of (outcome, error_code, error_string)
        monitor_rate = self.get_parameter('action_monitor_rate').value
        if not monitor_rate >= 0.1:
            raise ConfigError(f'{name}.action_monitor_rate ({monitor_rate}) must be >= 0.1 Hz')
        self.create_subscription(JointTrajectory, f'{name}/joint_trajectory', self._on_topic, RELIABLE)
        # like a JTC, goal outcomes are reported by a wall-clock monitor, not by the control loop:
        # a goal whose trajectory has run can still be active, and be preempted, until it ticks
        self.create_timer(1.0 / monitor_rate, self._monitor)
        if FollowJointTrajectory is not None:
            from rclpy.action import ActionServer
            self.action_server = ActionServer(
                self, FollowJointTrajectory, f'{name}/follow_joint_trajectory', self._execute,
                goal_callback=self._on_goal, handle_accepted_callback=self._on_accepted,
                cancel_callback=self._on_cancel)
        self.get_logger().info(
            f'{distro} joint_trajectory_controller rules: allow_nonzero_velocity_at_trajectory_end='
            f'{str(self.rules.allow_nonzero_velocity_at_trajectory_end).lower()}; '
            + ('topic and FollowJointTrajectory action' if FollowJointTrajectory else
               'topic only (control_msgs is not installed)'))

    # -- commands --------------------------------------------------------------------------------
    def _check(self, msg: JointTrajectory) -> str | None:
        reason = jtc.rejection(msg, self.rules, now=self._now())
        if reason is not None:
            self.rejected += 1
            self.log.error(reason.split(':')[0], f'trajectory rejected: {reason}')
        return reason

    def _apply(self, msg: JointTrajectory) -> bool:
        try:
            traj = conv.msg_to_trajectory(msg)
            if traj.start_time is not None:  # absolute stamp -> time since this episode's reset
                traj = replace(traj, start_time=traj.start_time - self._clock_offset())
            self.env.set_trajectory(traj)
            return True
        except TrajectoryError as err:  # the rules passed it, the follower cannot run it
            self.rejected += 1
            self.log.error('follower', f'trajectory rejected: {err}')
            return False

    def _on_topic(self, msg: JointTrajectory) -> None:
        if self._check(msg) is None:
            self._apply(msg)

    def _on_goal(self, goal):
        from rclpy.action import GoalResponse
        return GoalResponse.REJECT if self._check(goal.trajectory) is not None else GoalResponse.ACCEPT

    def _on_accepted(self, goal_handle) -> None:
        if self._goal is not None:
            self.log.info('preempted', 'a new goal preempts the active one (aborted: INVALID_GOAL, as a JTC does)')
        self._end_goal('abort', jtc.INVALID_GOAL, jtc.PREEMPTED_MESSAGE)
        self._goal = goal_handle
        self._outcomes[_key(goal_handle)] = Future()
        if not self._apply(goal_handle.request.trajectory):
            self._end_goal('abort', jtc.INVALID_GOAL, 'the simulated arm cannot follow this trajectory')
        goal_handle.execute()

    def _on_cancel(self, goal_handle):
        from rclpy.action import CancelResponse
        if self._goal is goal_handle:
            self.env.hold()
            self._end_goal('canceled', jtc.SUCCESSFUL, '')
        return CancelResponse.ACCEPT

    async def _execute(self, goal_handle):
        outcome, code, text = await self._outcomes[_key(goal_handle)]
        del self._outcomes[_key(goal_handle)]
        getattr(goal_handle, outcome)()    # succeed() / abort() / canceled()
        return FollowJointTrajectory.Result(error_code=code, error_string=text)

    def _end_goal(self, outcome: str, code: int, text: str) -> None:
        if self._goal is not None:
            future = self._outcomes[_key(self._goal)]
            self._goal = None
            future.set_result((outcome, code, text))

    # -- called by sim_node ----------------------------------------------------------------------
    def _monitor(self) -> None:
        """Succeed the active goal once its trajectory has run (action_monitor_rate)."""
        if self._goal is not None and not self.env.trajectory_active:
            self._end_goal('succeed', jtc.SUCCESSFUL, 'Goal successfully reached!')

    def after_step(self) -> None:
        """Check path tolerances on the step just taken: a violation holds and aborts the goal."""
        if self.path_tolerance.any() and self.env.trajectory_active:
            error = np.abs(self.env.commanded_position - self.env.observe(render=False).joint_positions)
            limited = self.path_tolerance > 0
            bad = limited & (error > self.path_tolerance)
            if bad.any():
                joint = self.env.joint_names[int(np.flatnonzero(bad)[0])]
                self.env.hold()
                text = f'Aborted due to path tolerance violation on joint {joint}'
                self.log.error('path_tolerance', text)
                self._end_goal('abort', jtc.PATH_TOLERANCE_VIOLATED, text)

    def reset(self) -> None:
        """A new episode: abort the goal that was running in the old one."""
        self._end_goal('abort', jtc.INVALID_GOAL, 'the simulated episode was reset')
