"""policy_node: camera + joint states + instruction in, one JointTrajectory per inference call out.

Each call sends the chunk's executed window (h of H actions) as ONE timed trajectory to a
joint_trajectory_controller-compatible topic, waits until the controller's clock has passed the
window's end and fresh observations arrived, then re-plans. Episodes start on an instruction (or an
EpisodeEvent START from the environment) and end on success, failure, the step limit, preemption
or shutdown; each ends with an EpisodeStats message and a JSONL line. Bad input is logged, counted
and never reaches the arm: no command is sent and the arm holds.
"""
from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from geometry_msgs.msg import PoseArray
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from policytrim_ros import constants as C
from policytrim_ros.config import ConfigError
from policytrim_ros.constants import camera_topic
from policytrim_ros.envs.base import JOINT_NAMES, Observation
from policytrim_ros.execution.config import ExecutionConfig, SafetyConfig
from policytrim_ros.execution.executor import ChunkExecutor
from policytrim_ros.execution.metrics import JsonlLog
from policytrim_ros.execution.safety import UnsafeChunkError
from policytrim_ros.msg import ChunkStats, EpisodeEvent, EpisodeStats
from policytrim_ros.nodes import conversions as conv
from policytrim_ros.nodes.params import declare_config
from policytrim_ros.nodes.runtime import LATCHED, RELIABLE, run_node
from policytrim_ros.policy.base import PolicyInputError, camera_mismatch
from policytrim_ros.policy.factory import PolicyConfig, make_policy

VERDICT_WAIT_S = 0.25
"""Wall seconds an episode whose last window has run waits for a SUCCESS/FAILURE event before it
ends with end_reason max_steps (sim_node publishes the verdict on a step with that step's
observation; across two topics either can arrive first)."""


@dataclass(frozen=True)
class PolicyTopicsConfig:
    """Topic names (relative, so a namespace or remap moves them together).

    cameras: one sensor_msgs/Image (rgb8) topic per camera of the policy, in its tile order,
        sensor-data QoS; [] = camera/image_raw, camera2/image_raw, ... (or remap those). Unused by
        a policy without images.
    joint_states: sensor_msgs/JointState, sensor-data QoS.
    instruction: std_msgs/String; each message starts a new episode with that instruction.
    episode_event: policytrim_ros/EpisodeEvent from the environment (START, SUCCESS, FAILURE).
    object_poses: geometry_msgs/PoseArray [cube, goal]; only read by backends that need privileged state.
    trajectory: trajectory_msgs/JointTrajectory to the controller (<controller>/joint_trajectory).
    episode_stats: policytrim_ros/EpisodeStats, one per finished episode.
    chunk_stats: policytrim_ros/ChunkStats, one per inference call.
    """

    cameras: tuple[str, ...] = ()
    joint_states: str = 'joint_states'
    instruction: str = 'instruction'
    episode_event: str = 'episode/event'
    object_poses: str = 'sim/object_poses'
    trajectory: str = 'arm_controller/joint_trajectory'
    episode_stats: str = 'policytrim/episode_stats'
    chunk_stats: str = 'policytrim/chunk_stats'


@dataclass(frozen=True)
class RobotConfig:
    """The arm being controlled.

    joint_names: controller joints, in the order of the policy's action columns.
    """

    joint_names: tuple[str, ...] = JOINT_NAMES

    def __post_init__(self):
        if not self.joint_names or len(set(self.joint_names)) != len(self.joint_names):
            raise ValueError(f'joint_names {list(self.joint_names)} must be non-empty and unique')


@dataclass(frozen=True)
class EpisodeConfig:
    """Episode bookkeeping.

    task: task label for episodes started by a plain instruction ('' = use the instruction).
    log_path: JSONL file that gets one line per finished episode ('' = no file).
    max_observation_age_s: observations older than this (node clock) are rejected as stale.
    """

    task: str = ''
    log_path: str = 'policytrim_episodes.jsonl'
    max_observation_age_s: float = 1.0

    def __post_init__(self):
        if not self.max_observation_age_s > 0:
            raise ValueError(f'max_observation_age_s ({self.max_observation_age_s}) must be > 0')


@dataclass(frozen=True)
class PolicyNodeConfig:
    """Everything policy_node reads from its parameters."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    robot: RobotConfig = field(default_factory=RobotConfig)
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    topics: PolicyTopicsConfig = field(default_factory=PolicyTopicsConfig)


class PolicyNode(Node):
    """Runs a chunked policy closed-loop through a trajectory controller and logs its efficiency."""

    def __init__(self):
        super().__init__('policy_node')
        self.config = cfg = declare_config(self, PolicyNodeConfig)
        self.policy = make_policy(cfg.policy, cfg.execution.chunk_size, cfg.execution.control_dt,
                                  cfg.robot.joint_names)
        meta = self.policy.metadata
        if meta.joint_names != cfg.robot.joint_names:
            raise ConfigError(f'the {meta.name} policy commands joints {list(meta.joint_names)} but '
                              f'robot.joint_names is {list(cfg.robot.joint_names)}')
        self.executor_ = ChunkExecutor(cfg.execution, cfg.robot.joint_names, cfg.safety)
        self.log = JsonlLog(cfg.episode.log_path) if cfg.episode.log_path else None
        self.errors: dict[str, int] = {}
        self._lock = threading.RLock()
        self._latest: dict[str, object] = {}   # topic kind -> latest message (latest-only buffers)
        self._instruction = ''
        self._ready_after = 0.0                # observations must be stamped at/after this time
        self._episode_count = 0
        self._cameras_seen: set[tuple[int, str]] = set()   # (camera, frame_id) of images received, checked once
        self._out_of_steps_at: float | None = None   # wall time the last window completed (monotonic)

        t = cfg.topics
        self.trajectory_pub = self.create_publisher(JointTrajectory, t.trajectory, RELIABLE)
        self.episode_pub = self.create_publisher(EpisodeStats, t.episode_stats, RELIABLE)
        self.chunk_pub = self.create_publisher(ChunkStats, t.chunk_stats, RELIABLE)
        store = lambda kind: (lambda msg: self._store(kind, msg))  # noqa: E731
        self.create_subscription(JointState, t.joint_states, store('joints'), qos_profile_sensor_data)
        image_topics = (t.cameras or tuple(camera_topic(i) for i in range(meta.num_cameras))
                        if meta.num_cameras else ())   # a policy without images (the expert) ignores them
        if len(image_topics) != meta.num_cameras:
            trained = f' {list(meta.cameras)}' if meta.cameras else ''
            raise ConfigError(f'topics.cameras names {len(image_topics)} topics {list(image_topics)} but the '
                              f'{meta.name} policy takes {meta.num_cameras} camera image(s){trained}: give one '
                              'topic per camera, in that order')
        for index, topic in enumerate(image_topics):
            self.create_subscription(Image, topic, functools.partial(self._on_image, index), qos_profile_sensor_data)
        if meta.uses_environment_state:
            self.create_subscription(PoseArray, t.object_poses, store('poses'), qos_profile_sensor_data)
        self.create_subscription(String, t.instruction, self._on_instruction, RELIABLE)
        self.create_subscription(EpisodeEvent, t.episode_event, self._on_event, LATCHED)
        # One thread runs every callback (nodes.runtime): sensor messages that arrive during an
        # inference call wait in their (keep-last) queues and update the latest-only buffers after it.
        self._wake = self.create_guard_condition(self._control_step)
        self.create_timer(0.05, self._control_step)
        self._warm_up()
        self.get_logger().info(
            f'{meta.name} policy: H={cfg.execution.chunk_size} h={cfg.execution.n_action_steps} '
            f'dt={cfg.execution.control_dt}s -> {t.trajectory}'
            + (f'; images from {list(image_topics)}' if image_topics else ''))

    # -- callbacks -----------------------------------------------------------------------------
    def _store(self, kind: str, msg) -> None:
        self._latest[kind] = msg
        self._wake.trigger()

    def _on_image(self, index: int, msg: Image) -> None:
        seen = (index, msg.header.frame_id)
        if seen not in self._cameras_seen:
            self._cameras_seen.add(seen)
            warning = camera_mismatch(self.policy.metadata, *seen)
            if warning:
                self.get_logger().warning(warning)
        self._store(f'image{index}', msg)

    def _on_instruction(self, msg: String) -> None:
        self._episode_count += 1
        episode_id = f'{self.get_name()}-{self._episode_count:04d}'
        self._start(episode_id, self.config.episode.task or msg.data, msg.data, self._now())

    def _on_event(self, msg: EpisodeEvent) -> None:
        stamp = conv.to_seconds(msg.header.stamp) or self._now()
        if msg.event == EpisodeEvent.START:
            self._start(msg.episode_id, msg.task or msg.instruction, msg.instruction, stamp)
            return
        with self._lock:
            ex = self.executor_
            if not ex.active or (msg.episode_id and msg.episode_id != ex.episode_id):
                return
            ex.end_window_at(stamp)
            success = msg.event == EpisodeEvent.SUCCESS
            self._finish(success, C.END_SUCCESS if success else C.END_FAILURE)

    def _control_step(self) -> None:
        """Re-plan when the window in flight has run and fresh observations are in."""
        with self._lock:
            ex = self.executor_
            if not ex.active:
                return
            if ex.window is not None:
                if not self._observed_since(ex.window.end_time - 0.5 * ex.config.control_dt):
                    return
                ex.complete_window()
            if ex.out_of_steps:
                # the simulator's verdict on the last step can arrive just after that step's
                # observation: wait for it briefly before calling the episode out of steps
                if self._out_of_steps_at is None:
                    self._out_of_steps_at = time.monotonic()
                if time.monotonic() - self._out_of_steps_at < VERDICT_WAIT_S:
                    return
                self._finish(False, C.END_MAX_STEPS)
                return
            observation = self._observation()
            episode_id = ex.episode_id
        if observation is None:
            return
        started = time.perf_counter()
        try:
            chunk = self.policy.predict_action_chunk(observation)
        except PolicyInputError as err:
            self._reject('policy_input', str(err), episode_id)
            return
        latency = time.perf_counter() - started
        with self._lock:
            if not ex.active or ex.episode_id != episode_id or ex.window is not None:
                return  # the episode ended (or was replaced) while the policy was thinking
            try:
                traj, record = ex.dispatch(chunk, observation.time, observation.joint_positions, latency)
            except UnsafeChunkError as err:
                self._reject('unsafe_chunk', str(err), episode_id)
                return
            now = self.get_clock().now().to_msg()
            self.trajectory_pub.publish(conv.trajectory_to_msg(traj))
            self.chunk_pub.publish(conv.chunk_stats_msg(record, now))

    # -- helpers -------------------------------------------------------------------------------
    def _warm_up(self) -> None:
        """One inference on a blank observation before any episode: a learned backend loads its
        instruction encoder and allocates on its first call (2 s on the first episode here), which
        would otherwise make the first chunk of a real run start from a 2 s old observation."""
        meta = self.policy.metadata
        if meta.image_size is None:
            return  # the scripted expert needs no warm-up (and reads privileged state)
        blank = Observation(image=np.zeros((*meta.image_size, 3), np.uint8),
                            joint_positions=np.zeros(len(meta.joint_names)),
                            joint_velocities=np.zeros(len(meta.joint_names)), environment_state=np.zeros(0),
                            instruction='warm up', time=0.0, step=0)
        started = time.perf_counter()
        self.policy.predict_action_chunk(blank)
        self.policy.reset()
        self.get_logger().info(f'warm-up inference: {time.perf_counter() - started:.2f}s')

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _start(self, episode_id: str, task: str, instruction: str, stamp: float) -> None:
        with self._lock:
            if self.executor_.active:
                self._finish(False, C.END_PREEMPTED)
            self.policy.reset()
            self.executor_.start(episode_id, task, instruction, time.monotonic())
            self._instruction, self._ready_after = instruction, stamp
        self.get_logger().info(f'episode {episode_id} ({task}): "{instruction}"')
        self._wake.trigger()

    def _finish(self, success: bool, end_reason: str) -> None:
        """End the running episode (lock held): hold the arm, publish and log its stats."""
        self._out_of_steps_at = None
        metrics = self.executor_.finish(success, end_reason, time.monotonic())
        self.trajectory_pub.publish(JointTrajectory())  # empty trajectory = JTC holds position
        self.episode_pub.publish(conv.episode_stats_msg(metrics, self.get_clock().now().to_msg()))
        if self.log is not None:
            self.log.append(metrics)
        self.get_logger().info(
            f'episode {metrics.episode_id} {end_reason}: steps={metrics.steps} '
            f'inference_calls={metrics.inference_calls}')

    def _reject(self, kind: str, reason: str, episode_id: str) -> None:
        """Bad chunk: count and log it, hold the arm and end the episode with end_reason 'error'."""
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.get_logger().error(f'{kind}: {reason}; holding, no command sent')
        with self._lock:
            if self.executor_.active and self.executor_.episode_id == episode_id:
                self._finish(False, C.END_ERROR)

    def _observed_since(self, t: float) -> bool:
        msgs = self._required_messages()
        return bool(msgs) and all(conv.to_seconds(m.header.stamp) >= t for m in msgs)

    def _required_messages(self):
        meta = self.policy.metadata
        kinds = (['joints'] + [f'image{i}' for i in range(meta.num_cameras)]
                 + (['poses'] if meta.uses_environment_state else []))
        msgs = [self._latest.get(k) for k in kinds]
        return [] if any(m is None for m in msgs) else msgs

    def _observation(self) -> Observation | None:
        """A validated observation from the latest messages, or None (reason logged, throttled)."""
        meta, cfg = self.policy.metadata, self.config
        if not self._observed_since(self._ready_after):
            return None
        joints = self._latest['joints']
        stamp = conv.to_seconds(joints.header.stamp)
        try:
            age = self._now() - stamp
            if age > cfg.episode.max_observation_age_s:
                raise conv.ObservationError(f'observation is stale: {age:.3f}s old (limit '
                                            f'{cfg.episode.max_observation_age_s}s)')
            positions, velocities = conv.joint_state_to_arrays(joints, cfg.robot.joint_names)
            tiles = [conv.image_to_array(self._latest[f'image{i}'], meta.camera_image_size)
                     for i in range(meta.num_cameras)]
            image = (np.concatenate(tiles, axis=1) if len(tiles) > 1 else tiles[0] if tiles
                     else np.zeros((0, 0, 3), np.uint8))
            state = (conv.poses_to_environment_state(self._latest['poses']) if meta.uses_environment_state
                     else np.zeros(0))
        except conv.ObservationError as err:
            self.errors['observation'] = self.errors.get('observation', 0) + 1
            self.get_logger().error(f'bad observation: {err}; holding', throttle_duration_sec=1.0)
            return None
        return Observation(image=image, joint_positions=positions, joint_velocities=velocities,
                           environment_state=state, instruction=self._instruction, time=stamp,
                           step=self.executor_.steps)

    def shutdown(self) -> None:
        """End a running episode as 'stopped' and command a hold."""
        with self._lock:
            if self.executor_.active:
                self._finish(False, C.END_STOPPED)


def main(args=None) -> int:
    return run_node(PolicyNode, 'policy_node', args)


if __name__ == '__main__':
    raise SystemExit(main())
