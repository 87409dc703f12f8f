"""sim_node: the embedded MuJoCo arm behind the interfaces Gazebo + ros2_control would expose.

Publishes ``joint_states``, an rgb8 image per camera (sensor-data QoS), the privileged object poses
(for the scripted expert), ``/clock`` and EpisodeEvents (START on reset, SUCCESS when the task's
check first passes); follows ``<controller>/joint_trajectory`` with joint_trajectory_controller
semantics (joint names must match, time_from_start strictly increasing, stamp 0 = start now, a new
trajectory replaces the rest of the old one, an empty one means hold, malformed ones are rejected
with a logged reason and the arm holds); resets through the ``sim/reset_episode`` service.

step_mode ``lockstep`` advances simulated time only while a trajectory is running (the world
waits while the policy thinks, as in simulated benchmarks; as fast as the CPU allows when
real_time_factor is 0); ``realtime`` steps continuously at real_time_factor x wall clock, like Gazebo.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from geometry_msgs.msg import PoseArray
from trajectory_msgs.msg import JointTrajectory

from policytrim_ros.config import ConfigError, suggest
from policytrim_ros.constants import camera_topic
from policytrim_ros.envs.arm import ArmEnv
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.registry import task_names
from policytrim_ros.execution.trajectory import TrajectoryError
from policytrim_ros.msg import EpisodeEvent
from policytrim_ros.nodes import conversions as conv
from policytrim_ros.nodes.params import declare_config
from policytrim_ros.nodes.runtime import LATCHED, RELIABLE, run_node
from policytrim_ros.srv import ResetEpisode

STEP_MODES = ('lockstep', 'realtime')


@dataclass(frozen=True)
class SimTopicsConfig:
    """Topic and service names (relative).

    joint_states: sensor_msgs/JointState published every control step.
    cameras: one sensor_msgs/Image rgb8 topic per camera of env.cameras, in order, published every
        control step (frame_id = the camera's name); [] = camera/image_raw, camera2/image_raw, ...
    object_poses: geometry_msgs/PoseArray [cube, goal] (privileged; for the scripted expert).
    trajectory: trajectory_msgs/JointTrajectory command input (JTC topic).
    episode_event: policytrim_ros/EpisodeEvent output (START, SUCCESS).
    reset_service: policytrim_ros/ResetEpisode service.
    """

    joint_states: str = 'joint_states'
    cameras: tuple[str, ...] = ()
    object_poses: str = 'sim/object_poses'
    trajectory: str = 'arm_controller/joint_trajectory'
    episode_event: str = 'episode/event'
    reset_service: str = 'sim/reset_episode'


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
        self.rejected_trajectories = 0
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
        self.create_subscription(JointTrajectory, t.trajectory, self._on_trajectory, RELIABLE)
        self.create_service(ResetEpisode, t.reset_service, self._on_reset)
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
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        if not msg.points:
            self.env.hold()
            return
        try:
            traj = conv.msg_to_trajectory(msg)
            if traj.start_time is not None:  # absolute stamp -> time since this episode's reset
                traj = replace(traj, start_time=traj.start_time - self._clock_offset)
            self.env.set_trajectory(traj)
        except TrajectoryError as err:
            self.rejected_trajectories += 1
            self.env.hold()
            self.get_logger().error(f'trajectory rejected: {err}; holding')

    def _on_reset(self, request: ResetEpisode.Request, response: ResetEpisode.Response):
        if request.task not in task_names():
            response.success = False
            response.message = (f"unknown task '{request.task}'{suggest(request.task, task_names())}; "
                                f'tasks: {task_names()}')
            return response
        self._reset(request.task, request.seed, request.episode_id)
        response.success, response.instruction = True, self.env.instruction
        response.message = f'{request.task} seed {request.seed}'
        return response

    def _tick(self) -> None:
        if self.config.sim.step_mode == 'lockstep' and not self.env.trajectory_active:
            return
        success = self.env.step()
        if success and not self._succeeded:   # the verdict first: a policy node that sees the last
            self._succeeded = True            # step's observation must not call it out of steps
            self._publish_event(EpisodeEvent.SUCCESS)
        self._publish_observation()

    def _republish(self) -> None:
        for pub, msg in zip((self.joint_pub, *self.image_pubs, self.poses_pub), self._last_obs_msgs):
            pub.publish(msg)

    # -- helpers -------------------------------------------------------------------
    def _reset(self, task: str, seed: int, episode_id: str, announce: bool = True) -> None:
        """Reset the env; announce the episode with START unless it is the start-up scene."""
        self._clock_offset = self.sim_time + self.env.control_dt if self._last_obs_msgs else 0.0
        self.env.reset(task, seed)
        self._episode_id, self._succeeded = episode_id, False
        self._publish_observation()
        if announce:
            self._publish_event(EpisodeEvent.START)

    def _publish_observation(self) -> None:
        obs = self.env.observe(render=True)
        stamp = conv.to_time(self.sim_time)
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=stamp))
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
