"""What launch/sim.launch.py and launch/deploy.launch.py share: the namespace and robot-topic
arguments, the params file re-keyed for a namespace, and the exit rules.

Needs the ROS 2 launch packages (launch, launch_ros); only the launch files import this module.
Uses launch APIs shared by Humble, Jazzy and Kilted.
"""
from __future__ import annotations

import tempfile

import yaml
from launch import Event, EventHandler
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit, OnShutdown
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration

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


def exit_rules(required: dict, runner=None) -> list[RegisterEventHandler]:
    """Event handlers that end the launch with the run.

    - ``runner`` (the episode runner) exits: the launch shuts down; if it failed, `ros2 launch` exits
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

    def fail(context):
        # raised while handling our own event (not inside the ProcessExited handlers, which must all run)
        raise LaunchFailedError(context.locals.event.message + '; shutting the launch down')

    rules = [RegisterEventHandler(OnShutdown(on_shutdown=lambda event, context: shutting_down.append(True))),
             RegisterEventHandler(EventHandler(matcher=lambda event: isinstance(event, _NodeFailed),
                                               entities=OpaqueFunction(function=fail)))]
    for label, action in required.items():
        rules.append(RegisterEventHandler(OnProcessExit(
            target_action=action, on_exit=lambda event, context, label=label: on_exit(label, event, context))))
    if runner is not None:
        rules.append(RegisterEventHandler(OnProcessExit(
            target_action=runner, on_exit=lambda event, context: on_exit('episode_runner', event, context))))
    return rules
