"""What the launch files share: the namespace and robot-topic arguments, the params file re-keyed
for a namespace, the exit rules, and the ros2_control bring-up of launch/robot.launch.py and
launch/gazebo.launch.py (robot description from the xacro, controller spawners, then the policy).

Needs the ROS 2 launch packages (launch, launch_ros); only the launch files import this module.
Uses launch APIs shared by Humble, Jazzy and Kilted.
"""
from __future__ import annotations

import json
import os
import tempfile

import yaml
from launch import Event, EventHandler
from launch.actions import (DeclareLaunchArgument, EmitEvent, ExecuteProcess, IncludeLaunchDescription,
                            OpaqueFunction, RegisterEventHandler)
from launch.event_handlers import OnProcessExit, OnShutdown
from launch.events import Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import Command, FindExecutable, LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from policytrim_ros.constants import camera_topic


class LaunchFailedError(RuntimeError):
    """A node of the launch failed; raised inside launch so that `ros2 launch` exits non-zero."""


class _NodeFailed(Event):
    name = 'policytrim_ros.launch_support.NodeFailed'

    def __init__(self, message: str):
        super().__init__()
        self.message = message


def robot_arguments(who: str) -> list[DeclareLaunchArgument]:
    """The ``namespace`` argument and the remaps for the topics a robot names differently.

    ``who`` says which nodes the remaps apply to, for the descriptions.
    """
    keep = "'' keeps the params file's topics.{}"
    return [
        DeclareLaunchArgument('namespace', default_value='',
                              description='ROS namespace of the nodes (e.g. arm1); their params file sections '
                                          'still apply, and relative topic names move into it'),
        DeclareLaunchArgument('joint_states', default_value='',
                              description=f"the robot's sensor_msgs/JointState topic, remapped for {who} "
                                          f"(e.g. /arm1/joint_states); {keep.format('joint_states')}"),
        DeclareLaunchArgument('camera_topics', default_value='',
                              description=f"the robot's camera sensor_msgs/Image topics, comma-separated, in "
                                          f"the policy's camera order (the shipped models': scene, wrist), "
                                          f'remapped for {who}; '
                                          f"{keep.format('cameras')} (default camera/image_raw, camera2/image_raw)"),
        DeclareLaunchArgument('controller', default_value='',
                              description=f"the robot's joint_trajectory_controller (e.g. /arm1/my_controller), "
                                          f'controller.name of {who}: its <controller>/joint_trajectory topic, '
                                          '<controller>/follow_joint_trajectory action and parameter services; '
                                          "'' keeps the params file's controller.name"),
    ]


def full_namespace(context) -> str:
    """The absolute namespace the nodes get, as launch_ros forms it: ``namespace`` under an including
    file's PushRosNamespace, or ``namespace`` alone when it is absolute ('/arm1')."""
    own = LaunchConfiguration('namespace').perform(context).strip()
    parts = [own] if own.startswith('/') else [context.launch_configurations.get('ros_namespace') or '', own]
    tokens = [t for p in parts for t in p.split('/') if t]
    return '/' + '/'.join(tokens) if tokens else ''


def params_in_namespace(path: str, namespace: str) -> str:
    """``path``, or a copy whose node sections (``policy_node:``) are keyed ``<namespace>/policy_node``.

    ROS matches a params file's node keys against the node's full name, so a plain ``policy_node:``
    section would not reach ``/arm1/policy_node``. Keys that start with '/' (``/**``, full names)
    are kept as they are.
    """
    if not namespace:
        return path
    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        return path
    keyed = {(f'{namespace}/{key}' if isinstance(key, str) and not key.startswith('/') and isinstance(value, dict)
              and 'ros__parameters' in value else key): value for key, value in data.items()}
    if list(keyed) == list(data):
        return path
    with tempfile.NamedTemporaryFile('w', prefix='policytrim_params_', suffix='.yaml', delete=False) as f:
        yaml.safe_dump(keyed, f, sort_keys=False)
    return f.name


def _topics(path: str, node_name: str) -> dict:
    """The ``topics`` parameters a params file sets for ``node_name`` (``{}`` if none)."""
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    for key in (node_name, f'/{node_name}'):
        section = data.get(key) if isinstance(data, dict) else None
        if isinstance(section, dict):
            return (section.get('ros__parameters') or {}).get('topics') or {}
    return {}


def remappings(context, path: str, node_name: str, defaults) -> list[tuple[str, str]]:
    """Remap rules from the topic names ``node_name`` uses (its params file's ``topics.*``, else the
    node's ``defaults``, a *TopicsConfig) to the robot's, for the arguments that are set."""
    topics = _topics(path, node_name)
    rules = []
    joint_states = LaunchConfiguration('joint_states').perform(context).strip()
    if joint_states:
        rules.append((topics.get('joint_states') or defaults.joint_states, joint_states))
    cameras = LaunchConfiguration('camera_topics').perform(context).strip().strip('[]')
    own = list(topics.get('cameras') or defaults.cameras)
    for i, name in enumerate(c.strip().strip('\'"') for c in cameras.split(',') if c.strip()):
        rules.append((own[i] if i < len(own) else camera_topic(i), name))
    return rules


def controller_parameters(context) -> dict:
    """``{'controller.name': ...}`` when the ``controller`` argument is set (``{}`` otherwise): the
    controller's name decides its topic, action and parameter services, so it is a parameter, not
    a remap."""
    controller = LaunchConfiguration('controller').perform(context).strip().rstrip('/')
    return {'controller.name': controller} if controller else {}


def failure_handler() -> RegisterEventHandler:
    """Turns a _NodeFailed event into a LaunchFailedError, so that `ros2 launch` exits 1."""
    def fail(context):
        # raised while handling our own event (not inside the ProcessExited handlers, which must all run)
        raise LaunchFailedError(context.locals.event.message + '; shutting the launch down')
    return RegisterEventHandler(EventHandler(matcher=lambda event: isinstance(event, _NodeFailed),
                                             entities=[OpaqueFunction(function=fail)]))


def exit_rules(required: dict, runner=None, runner_label: str = 'episode_runner') -> list[RegisterEventHandler]:
    """Event handlers that end the launch with the run.

    - ``runner`` (the episode runner, or trainer_node: ``runner_label``) exits: the launch shuts down; if it failed, `ros2 launch` exits
      1 (launch's return code is 0, or 1 after an error inside launch: a child's own exit code
      cannot pass through, so its failure is raised as a LaunchFailedError that names it).
    - any of ``required`` ({label: action}, e.g. sim_node, policy_node) exits before shutdown: the
      launch shuts down, and exits 1 if the node failed.
    Exits during a shutdown already under way are expected and ignored.
    """
    shutting_down = []

    def on_exit(label, event, context):
        if shutting_down:
            return None
        if event.returncode != 0:
            return [EmitEvent(event=_NodeFailed(f'{label} exited with code {event.returncode}'))]
        return [EmitEvent(event=Shutdown(reason=f'{label} exited'))]

    rules = [RegisterEventHandler(OnShutdown(on_shutdown=lambda event, context: shutting_down.append(True))),
             failure_handler()]
    for label, action in required.items():
        rules.append(RegisterEventHandler(OnProcessExit(
            target_action=action, on_exit=lambda event, context, label=label: on_exit(label, event, context))))
    if runner is not None:
        rules.append(RegisterEventHandler(OnProcessExit(
            target_action=runner, on_exit=lambda event, context: on_exit(runner_label, event, context))))
    return rules


CONTROLLERS = ('joint_state_broadcaster', 'arm_controller')
"""The controllers config/controllers.yaml defines, spawned in this order."""


def bringup_arguments(share: str, params_file: str, hardware_plugin: str | None = None) -> list[DeclareLaunchArgument]:
    """The arguments robot.launch.py and gazebo.launch.py share; ``share`` is the package's share
    directory, ``params_file`` and ``hardware_plugin`` the launch file's defaults (no
    hardware_plugin argument when None: Gazebo's is fixed)."""
    plugin = [] if hardware_plugin is None else [
        DeclareLaunchArgument('hardware_plugin', default_value=hardware_plugin,
                              description="the <ros2_control> hardware plugin (the xacro's hardware_plugin arg): "
                                          "mock_components/GenericSystem or your arm's driver")]
    # deploy.launch.py's remaps, declared here too so that `ros2 launch --show-args` lists them (the
    # policy is included later, from an event handler); one arm per launch, so no namespace
    remaps = [a for a in robot_arguments('policy_node') if a.name != 'namespace']
    return [*plugin, *remaps,
        DeclareLaunchArgument('description_file',
                              default_value=os.path.join(share, 'urdf', 'policytrim_arm.urdf.xacro'),
                              description='the robot description (xacro) for robot_state_publisher and ros2_control'),
        DeclareLaunchArgument('controllers_file', default_value=os.path.join(share, 'config', 'controllers.yaml'),
                              description='ros2_control controllers: joint_state_broadcaster and arm_controller'),
        DeclareLaunchArgument('params_file', default_value=params_file,
                              description='ROS parameter file for policy_node'),
        DeclareLaunchArgument('spawn_controllers', default_value='true',
                              description="spawn joint_state_broadcaster and arm_controller, then start policy_node; "
                                          "false if your robot's bring-up spawns them"),
        DeclareLaunchArgument('instruction', default_value='',
                              description="a task instruction (e.g. 'reach the red target') published once on "
                                          "/instruction when policy_node listens: starts an episode; '' = none"),
    ]


def robot_description(hardware_plugin) -> ParameterValue:
    """The ``robot_description`` parameter: the description_file expanded by xacro at launch time."""
    return ParameterValue(Command([
        FindExecutable(name='xacro'), ' ', LaunchConfiguration('description_file'),
        ' hardware_plugin:=', hardware_plugin, ' controllers_file:=', LaunchConfiguration('controllers_file')]),
        value_type=str)


def after_success(action, label: str, entities: list) -> RegisterEventHandler:
    """``entities`` once ``action`` (a process that is meant to finish, such as a spawner) exits 0;
    if it fails, the launch shuts down and `ros2 launch` exits 1 (the handler of exit_rules)."""
    def on_exit(event, context):
        if event.returncode != 0:
            return [EmitEvent(event=_NodeFailed(f'{label} exited with code {event.returncode}'))]
        return entities
    return RegisterEventHandler(OnProcessExit(target_action=action, on_exit=on_exit))


def controllers_then_policy(context, share: str, use_sim_time: str) -> list:
    """The controller spawner (if spawn_controllers), then deploy.launch.py's policy_node with the
    params_file and ``use_sim_time``, and the instruction once policy_node subscribes to it."""
    policy = [IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'deploy.launch.py')),
        launch_arguments={'params_file': LaunchConfiguration('params_file'), 'use_sim_time': use_sim_time}.items())]
    instruction = LaunchConfiguration('instruction').perform(context).strip()
    if instruction:
        # -w 1: waits for policy_node's subscription, so the episode is not announced to nobody
        policy.append(ExecuteProcess(cmd=[FindExecutable(name='ros2'), 'topic', 'pub', '--once', '-w', '1',
                                          'instruction', 'std_msgs/msg/String', json.dumps({'data': instruction})],
                                     name='instruction', output='screen'))
    if LaunchConfiguration('spawn_controllers').perform(context).strip().lower() not in ('true', '1'):
        return policy
    spawner = Node(package='controller_manager', executable='spawner', name='controller_spawner', output='screen',
                   arguments=[*CONTROLLERS, '--controller-manager', '/controller_manager',
                              '--param-file', LaunchConfiguration('controllers_file')])
    return [spawner, after_success(spawner, 'the controller spawner', policy)]
