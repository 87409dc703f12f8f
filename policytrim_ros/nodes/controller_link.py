"""policy_node's link to the joint_trajectory_controller (JTC): what its parameters allow, windows
out (its topic, or one FollowJointTrajectory goal per window), holds, and what it says back.

At start-up the link reads the controller's ``joints`` and ``allow_nonzero_velocity_at_trajectory_end``
through its parameter services and sets how windows end (``controller.window_end: auto``), or
names the setting that would make the controller reject every window (``problem``). On the action
interface a newer goal preempts the previous one (the controller aborts it: not a failure), a
rejected goal or a tolerance abort ends the episode through ``on_failure``, and the hold is a
cancel of the running goal; on the topic the hold is a one-point trajectory at the measured
positions (an empty one is rejected by every distro).
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters
from rclpy.node import Node
from trajectory_msgs.msg import JointTrajectory

from policytrim_ros import constants as C
from policytrim_ros.config import ConfigError
from policytrim_ros.execution import jtc
from policytrim_ros.execution.executor import ChunkExecutor
from policytrim_ros.nodes import conversions as conv
from policytrim_ros.nodes.policy_config import ControllerConfig
from policytrim_ros.nodes.runtime import RELIABLE, CauseLog
from policytrim_ros.trajectory import hold_trajectory

PARAMETERS = ('joints', 'allow_nonzero_velocity_at_trajectory_end')


class ControllerLink:
    """Sends windows and holds to one JTC for ``executor``'s episodes; ``on_failure(episode_id,
    end_reason)`` ends the running episode when the controller refused or aborted its window."""

    def __init__(self, node: Node, config: ControllerConfig, joint_names: tuple[str, ...], control_dt: float,
                 executor: ChunkExecutor, trouble: CauseLog, on_failure: Callable[[str, str], None]):
        self.node, self.config, self.joint_names, self.control_dt = node, config, joint_names, control_dt
        self.executor, self.trouble, self.on_failure = executor, trouble, on_failure
        self.problem = ''             # a controller setting every window would break
        self._known = False           # the controller's parameters were read
        self._query = None            # Future of a background parameter query
        self._goal_handle = None      # action: the latest window's goal
        self._param_client = node.create_client(GetParameters, f'{config.name}/get_parameters')
        if config.interface == 'action':
            try:
                from control_msgs.action import FollowJointTrajectory
            except ImportError:
                raise ConfigError("controller.interface 'action' needs control_msgs "
                                  '(FollowJointTrajectory): install ros-<distro>-control-msgs, or use '
                                  "controller.interface 'topic'") from None
            from rclpy.action import ActionClient
            self._goal_type = FollowJointTrajectory.Goal
            self.action_client = ActionClient(node, FollowJointTrajectory, config.action_name)
        else:
            self.publisher = node.create_publisher(JointTrajectory, config.trajectory_topic, RELIABLE)

    @property
    def target(self) -> str:
        c = self.config
        return f'{c.action_name} (action)' if c.interface == 'action' else c.trajectory_topic

    # -- the controller's parameters -------------------------------------------------------------
    def read_parameters(self) -> None:
        """Block up to ``parameter_timeout_s`` for the controller's parameters; adapt or raise
        ConfigError. Call before the node has subscriptions: spinning here runs no other callback."""
        c = self.config
        if c.parameter_timeout_s == 0:
            self.node.get_logger().info(f"controller {c.name}'s parameters are not read (controller."
                                        f'parameter_timeout_s 0): windows end {self.executor.window_end}')
            return
        if self._param_client.wait_for_service(timeout_sec=c.parameter_timeout_s):
            future = self._param_client.call_async(GetParameters.Request(names=list(PARAMETERS)))
            rclpy.spin_until_future_complete(self.node, future, timeout_sec=c.parameter_timeout_s)
            if future.done() and future.result() is not None:
                self._apply(future.result())
                if self.problem:
                    raise ConfigError(self.problem)
                return
        self.node.get_logger().warning(
            f"controller {c.name}'s parameters were not readable within {c.parameter_timeout_s}s "
            '(controller.name, controller.parameter_timeout_s): '
            + ('windows end at rest, which every joint_trajectory_controller accepts; if its '
               'allow_nonzero_velocity_at_trajectory_end is true, set controller.window_end: moving for '
               'seamless windows. Asking again at each episode start.' if c.window_end == 'auto' else
               f'controller.window_end {c.window_end} is used as set.'))

    def ask_again(self) -> None:
        """At an episode start: query the parameters in the background if still unknown."""
        if self.config.parameter_timeout_s == 0 or self._known or self._query is not None \
                or not self._param_client.service_is_ready():
            return
        self._query = self._param_client.call_async(GetParameters.Request(names=list(PARAMETERS)))
        self._query.add_done_callback(self._on_parameters)

    @property
    def querying(self) -> bool:
        """A parameter query is in flight (its answer decides how the next window ends)."""
        return self._query is not None

    def _on_parameters(self, future) -> None:
        self._query = None
        if future.result() is not None:
            self._apply(future.result())
            if self.problem:
                self.node.get_logger().error(self.problem + '; no window will be sent')

    def _apply(self, response) -> None:
        c = self.config
        values = dict(zip(PARAMETERS, response.values))
        self._known = True
        joints = values['joints']
        if joints.type == ParameterType.PARAMETER_STRING_ARRAY and \
                sorted(joints.string_array_value) != sorted(self.joint_names):
            self.problem = (
                f"controller {c.name}'s joints {list(joints.string_array_value)} are not robot.joint_names "
                f'{list(self.joint_names)}: it would reject every window (set robot.joint_names to its '
                "joints, in the order of the policy's action columns, or controller.name to the right controller)")
            return
        allow = values['allow_nonzero_velocity_at_trajectory_end']
        readable = allow.type == ParameterType.PARAMETER_BOOL
        if c.window_end == 'moving' and readable and not allow.bool_value:
            self.problem = (
                f"controller.window_end is moving but controller {c.name}'s allow_nonzero_velocity_at_trajectory_end "
                "is false: it would reject every window. Set it true in the controller's parameters "
                '(config/controllers.yaml does) or use controller.window_end auto or rest')
            return
        if c.window_end == 'auto':
            self.executor.window_end = 'moving' if readable and allow.bool_value else 'rest'
            self.node.get_logger().info(
                f'controller {c.name}: allow_nonzero_velocity_at_trajectory_end='
                f'{str(allow.bool_value).lower() if readable else "unset"} -> windows end {self.executor.window_end}')

    # -- windows and holds -----------------------------------------------------------------------
    def ready(self) -> bool:
        """Whether a window can be sent now (the action server is up; logs while it is not)."""
        if self.config.interface == 'topic' or self.action_client.server_is_ready():
            return True
        self.trouble.warning('no_action_server', f'waiting for the action server {self.config.action_name} '
                             '(is the controller active?)')
        return False

    def send(self, msg: JointTrajectory, episode_id: str) -> None:
        """One window: a topic message or an action goal."""
        if self.config.interface == 'topic':
            if self.publisher.get_subscription_count() == 0:
                self.trouble.warning('no_controller', f'nothing subscribes to {self.config.trajectory_topic}: '
                                     'is the controller active (controller.name)?')
            self.publisher.publish(msg)
            return
        future = self.action_client.send_goal_async(self._goal_type(trajectory=msg))
        future.add_done_callback(functools.partial(self._on_goal_response, episode_id))

    def hold(self, positions: np.ndarray | None) -> None:
        """Stop the arm: cancel the running goal, or send a one-point hold at ``positions`` (the
        measured ones; None = none usable, the controller finishes its window and holds its end)."""
        if self.config.interface == 'action':
            if self._goal_handle is not None:
                self._goal_handle.cancel_goal_async()
            return
        if positions is not None:
            self.publisher.publish(conv.trajectory_to_msg(hold_trajectory(positions, self.joint_names, self.control_dt)))

    def _current(self, episode_id: str) -> bool:
        return self.executor.active and self.executor.episode_id == episode_id

    def _on_goal_response(self, episode_id: str, future) -> None:
        handle = future.result()
        if not self._current(episode_id):
            if handle is not None and handle.accepted:
                handle.cancel_goal_async()   # the episode ended while its goal was on the way
            return
        if handle is None or not handle.accepted:
            self.node.get_logger().error(f'{self.config.action_name} rejected the window of episode {episode_id} '
                                         '(its log says why); holding')
            self.on_failure(episode_id, C.END_CONTROLLER_REJECTED)
            return
        self._goal_handle = handle
        handle.get_result_async().add_done_callback(functools.partial(self._on_goal_result, episode_id, handle))

    def _on_goal_result(self, episode_id: str, handle, future) -> None:
        from action_msgs.msg import GoalStatus
        response = future.result()
        if handle is not self._goal_handle:
            return   # an older window's goal, preempted by ours: not a failure
        self._goal_handle = None
        if response is None or response.status != GoalStatus.STATUS_ABORTED or not self._current(episode_id):
            return   # succeeded, canceled by our own hold, or its episode is over
        code, text = response.result.error_code, response.result.error_string
        self.node.get_logger().error(f'{self.config.action_name} aborted the window of episode {episode_id}: '
                                     f'error_code {code} {text!r}; holding')
        tolerance = code in (jtc.PATH_TOLERANCE_VIOLATED, jtc.GOAL_TOLERANCE_VIOLATED)
        self.on_failure(episode_id, C.END_TOLERANCE_VIOLATED if tolerance else C.END_CONTROLLER_ABORTED)
