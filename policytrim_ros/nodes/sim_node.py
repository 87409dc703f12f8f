"""sim_node: the embedded MuJoCo arm behind the interfaces Gazebo + ros2_control would expose.

Publishes ``joint_states``, an rgb8 image per camera (sensor-data QoS), the privileged object poses
(for the scripted expert), ``/clock`` and EpisodeEvents (START on reset, SUCCESS when the task's
check first passes); resets through the ``sim/reset_episode`` service. Its trajectory controller is
a node of its own in this process, named and configured like the real joint_trajectory_controller
and as strict as the chosen distro's (``nodes/sim_controller.py``): ``arm_controller/joint_trajectory``
and the ``arm_controller/follow_joint_trajectory`` action, stamp 0 = start now, a new trajectory
replaces the rest of the old one, rejected messages are logged with the real controller's words.

step_mode ``lockstep`` advances simulated time only while a trajectory is running (the world
waits while the policy thinks, as in simulated benchmarks; as fast as the CPU allows when
real_time_factor is 0); ``realtime`` steps continuously at real_time_factor x wall clock, like Gazebo.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from geometry_msgs.msg import PoseArray

from policytrim_ros.config import ConfigError, check_node_name, flatten, load_yaml, ros_parameters, suggest
from policytrim_ros.constants import camera_topic
from policytrim_ros.envs.arm import ArmEnv
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.registry import task_names
from policytrim_ros.execution.jtc import DISTROS
from policytrim_ros.msg import EpisodeEvent
from policytrim_ros.nodes import conversions as conv
from policytrim_ros.nodes.params import declare_config
from policytrim_ros.nodes.sim_controller import SimController
from policytrim_ros.nodes.runtime import LATCHED, RELIABLE, run_node
from policytrim_ros.resources import resolve
from policytrim_ros.srv import ResetEpisode

STEP_MODES = ('lockstep', 'realtime')


@dataclass(frozen=True)
class SimTopicsConfig:
    """Topic and service names (relative).

    joint_states: sensor_msgs/JointState published every control step.
    cameras: one sensor_msgs/Image rgb8 topic per camera of env.cameras, in order, published every
        control step (frame_id = the camera's name); [] = camera/image_raw, camera2/image_raw, ...
    object_poses: geometry_msgs/PoseArray [cube, goal] (privileged; for the scripted expert).
    episode_event: policytrim_ros/EpisodeEvent output (START, SUCCESS).
    reset_service: policytrim_ros/ResetEpisode service.
    """

    joint_states: str = 'joint_states'
    cameras: tuple[str, ...] = ()
    object_poses: str = 'sim/object_poses'
    episode_event: str = 'episode/event'
    reset_service: str = 'sim/reset_episode'


@dataclass(frozen=True)
class SimControllerConfig:
    """The joint_trajectory_controller the sim stands in for.

    name: its node name, in this process: topic <name>/joint_trajectory, action
        <name>/follow_joint_trajectory, and the controller's own parameters (joints,
        allow_nonzero_velocity_at_trajectory_end, constraints.<joint>.trajectory, ...) set in a
        params file's <name>: section, as for the real controller (config/controllers.yaml).
    distro: humble, jazzy or kilted: the real controller whose defaults and rules apply.
    params_file: a ros2_control controllers file (path or package:// URI) whose <name>: section
        sets the controller's parameters, as controller_manager would ('' = the distro's defaults;
        this is their only source: sim_node's own params files and -p do not reach the controller).
    """

    name: str = 'arm_controller'
    distro: str = 'jazzy'
    params_file: str = ''

    def __post_init__(self):
        if self.distro not in DISTROS:
            raise ValueError(f"distro '{self.distro}' must be one of {list(DISTROS)}{suggest(self.distro, DISTROS)}")
        check_node_name(self.name)


@dataclass(frozen=True)
class SimConfig:
    """How simulated time runs.

    step_mode: lockstep (time advances only while a trajectory runs) or realtime (always).
    real_time_factor: simulated seconds per wall-clock second; 0 = as fast as possible (lockstep only).
    idle_publish_rate_hz: re-publish the latest observation this often while time stands still.
    publish_clock: publish /clock so nodes with use_sim_time follow simulated time.
    initial_task: task set up at start-up (before any reset request).
    initial_seed: seed of that first episode.
    """

    step_mode: str = 'lockstep'
    real_time_factor: float = 0.0
    idle_publish_rate_hz: float = 5.0
    publish_clock: bool = True
    initial_task: str = 'reach'
    initial_seed: int = 0

    def __post_init__(self):
        if self.step_mode not in STEP_MODES:
            raise ValueError(f"step_mode '{self.step_mode}' must be one of {list(STEP_MODES)}"
                             f'{suggest(self.step_mode, STEP_MODES)}')
        if self.real_time_factor < 0 or (self.step_mode == 'realtime' and self.real_time_factor == 0):
            raise ValueError(f'real_time_factor ({self.real_time_factor}) must be >= 0, and > 0 in realtime mode')
        if not self.idle_publish_rate_hz > 0:
            raise ValueError(f'idle_publish_rate_hz ({self.idle_publish_rate_hz}) must be > 0')


@dataclass(frozen=True)
class SimNodeConfig:
    """Everything sim_node reads from its parameters."""

    sim: SimConfig = field(default_factory=SimConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    controller: SimControllerConfig = field(default_factory=SimControllerConfig)
    topics: SimTopicsConfig = field(default_factory=SimTopicsConfig)


class SimNode(Node):
    """The embedded simulated arm as a ROS 2 node."""

    def __init__(self):
        super().__init__('sim_node')
        self.config = cfg = declare_config(self, SimNodeConfig)
        if cfg.sim.initial_task not in task_names():
            raise ValueError(f"sim.initial_task '{cfg.sim.initial_task}' is not one of {task_names()}"
                             f'{suggest(cfg.sim.initial_task, task_names())}')
        cameras = cfg.env.cameras
        image_topics = cfg.topics.cameras or tuple(camera_topic(i) for i in range(len(cameras)))
        if len(image_topics) != len(cameras):
            raise ConfigError(f'topics.cameras names {len(image_topics)} topics {list(image_topics)} for the '
                              f'{len(cameras)} cameras of env.cameras {list(cameras)}: give one per camera '
                              '(or none for camera/image_raw, camera2/image_raw, ...)')
        self.env = ArmEnv(cfg.env)
        self._clock_offset = 0.0       # simulated time at the current episode's reset
        self._episode_id = ''
        self._succeeded = False
        self._last_obs_msgs: tuple = ()

        t = cfg.topics
        self.joint_pub = self.create_publisher(JointState, t.joint_states, qos_profile_sensor_data)
        self.image_pubs = [self.create_publisher(Image, topic, qos_profile_sensor_data) for topic in image_topics]
        self.poses_pub = self.create_publisher(PoseArray, t.object_poses, qos_profile_sensor_data)
        self.event_pub = self.create_publisher(EpisodeEvent, t.episode_event, LATCHED)
        self.clock_pub = self.create_publisher(Clock, '/clock', RELIABLE) if cfg.sim.publish_clock else None
        controller = cfg.controller
        parameters = (flatten(ros_parameters(load_yaml(resolve(controller.params_file)), controller.name))
                      if controller.params_file else {})
        self.controller = SimController(controller.name, controller.distro, self.env, parameters,
                                        self.get_namespace(), now=lambda: self.sim_time,
                                        clock_offset=lambda: self._clock_offset)
        self.companion_nodes = (self.controller,)
        # The reset service lives on the controller's node: rclpy handles a node's subscriptions
        # (and actions) before its services, so a hold sent before the reset request is applied
        # before the arm is teleported, never to the next episode's arm.
        self.controller.create_service(ResetEpisode, t.reset_service, self._on_reset)
        if cfg.sim.step_mode == 'realtime':
            period = cfg.env.control_dt / cfg.sim.real_time_factor
        else:
            period = cfg.env.control_dt / cfg.sim.real_time_factor if cfg.sim.real_time_factor else 0.001
        self.create_timer(period, self._tick)
        self.create_timer(1.0 / cfg.sim.idle_publish_rate_hz, self._republish)
        self._reset(cfg.sim.initial_task, cfg.sim.initial_seed, episode_id='', announce=False)
        self.get_logger().info(f'{cfg.sim.step_mode} sim ready: joints {list(self.env.joint_names)}, '
                               f'tasks {task_names()}')

    @property
    def sim_time(self) -> float:
        return self._clock_offset + self.env.time

    # -- callbacks -----------------------------------------------------------------------------
    def _on_reset(self, request: ResetEpisode.Request, response: ResetEpisode.Response):
        if request.task not in task_names():
            response.success = False
            response.message = (f"unknown task '{request.task}'{suggest(request.task, task_names())}; "
                                f'tasks: {task_names()}')
            return response
        if request.episode_id and request.episode_id == self._episode_id and request.task == self.env.task.name:
            # a repeated request (its first answer lost): the episode is under way, do not restart it
            response.success, response.instruction = True, self.env.instruction
            response.message = f'episode {request.episode_id} already reset'
            return response
        self._reset(request.task, request.seed, request.episode_id)
        response.success, response.instruction = True, self.env.instruction
        response.message = f'{request.task} seed {request.seed}'
        return response

    def _tick(self) -> None:
        if self.config.sim.step_mode == 'lockstep' and not self.env.trajectory_active:
            return
        success = self.env.step()
        self.controller.after_step()
        if success and not self._succeeded:   # the verdict first: a policy node that sees the last
            self._succeeded = True            # step's observation must not call it out of steps
            self._publish_event(EpisodeEvent.SUCCESS)
        self._publish_observation()

    def _republish(self) -> None:
        """The latest observation again, after /clock at its stamp (idle, the clock does not advance; but a
        node that joined late, or whose clock still shows a restarted sim's old time, gets it)."""
        if self.clock_pub is not None and self._last_obs_msgs:
            self.clock_pub.publish(Clock(clock=self._last_obs_msgs[0].header.stamp))
        for pub, msg in zip((self.joint_pub, *self.image_pubs, self.poses_pub), self._last_obs_msgs):
            pub.publish(msg)

    # -- helpers -------------------------------------------------------------------
    def _reset(self, task: str, seed: int, episode_id: str, announce: bool = True) -> None:
        """Reset the env; announce the episode with START unless it is the start-up scene."""
        self._clock_offset = self.sim_time + self.env.control_dt if self._last_obs_msgs else 0.0
        self.controller.reset()
        self.env.reset(task, seed)
        self._episode_id, self._succeeded = episode_id, False
        self._publish_observation()
        if announce:
            self._publish_event(EpisodeEvent.START)

    def _publish_observation(self) -> None:
        obs = self.env.observe(render=True)
        stamp = conv.to_time(self.sim_time)
        self._last_obs_msgs = (
            conv.arrays_to_joint_state(self.env.joint_names, obs.joint_positions, obs.joint_velocities, stamp),
            *(conv.array_to_image(tile, stamp, camera) for tile, camera in
              zip(np.split(obs.image, len(self.image_pubs), axis=1), self.env.cameras)),
            conv.environment_state_to_poses(obs.environment_state, stamp, 'world'),
        )
        self._republish()

    def _publish_event(self, kind: int) -> None:
        msg = EpisodeEvent(event=kind, episode_id=self._episode_id, task=self.env.task.name,
                           instruction=self.env.instruction, step=self.env.step_count)
        msg.header.stamp = conv.to_time(self.sim_time)
        self.event_pub.publish(msg)


def main(args=None) -> int:
    return run_node(SimNode, 'sim_node', args)


if __name__ == '__main__':
    raise SystemExit(main())
