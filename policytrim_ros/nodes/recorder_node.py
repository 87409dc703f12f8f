"""recorder_node: every episode into its own rosbag2 (MCAP) bag, with its chunk provenance.

Subscribes to the cameras, joint states, instruction, the controller's commands, the episode
events and policy_node's ChunkStats and EpisodeStats with raw subscriptions: each message arrives
as the CDR bytes DDS delivered and goes into the bag as it is (``data/recording.py`` splits the
stream per episode and deserializes only the small episode-keyed messages). The bags are named
after the episode ids, under ``recording.output_dir``; topics keep their full names (namespace
included), as ``ros2 bag record`` stores them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from policytrim_ros.config import check_node_name
from policytrim_ros.data.bag import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS
from policytrim_ros.data.recording import EpisodeRecorder, RecordedTopic, RecordingConfig
from policytrim_ros.msg import ChunkStats, EpisodeEvent, EpisodeStats
from policytrim_ros.nodes.params import declare_config
from policytrim_ros.nodes.runtime import CauseLog, run_node

# Deeper queues than the publishers': a recorder that falls behind for a moment must not drop.
_STREAM = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.BEST_EFFORT)   # matches any publisher
_RELIABLE = QoSProfile(depth=100)
_LATCHED = QoSProfile(depth=10, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


@dataclass(frozen=True)
class RecorderTopicsConfig:
    """Topics recorded (relative names resolve in the node's namespace).

    cameras: sensor_msgs/Image topics, one per camera, in the policy's tile order.
    joint_states: sensor_msgs/JointState.
    controller: the joint_trajectory_controller whose <controller>/joint_trajectory
        (trajectory_msgs/JointTrajectory: policy_node's windows and holds) is recorded.
    instruction: std_msgs/String.
    episode_event: policytrim_ros/EpisodeEvent (START opens an episode's bag).
    episode_stats: policytrim_ros/EpisodeStats (closes it).
    chunk_stats: policytrim_ros/ChunkStats (one per inference call: the provenance).
    """

    cameras: tuple[str, ...] = ('camera/image_raw',)
    joint_states: str = 'joint_states'
    controller: str = 'arm_controller'
    instruction: str = 'instruction'
    episode_event: str = 'episode/event'
    episode_stats: str = 'policytrim/episode_stats'
    chunk_stats: str = 'policytrim/chunk_stats'

    def __post_init__(self):
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f'cameras {list(self.cameras)} must name each topic once')
        check_node_name(self.controller)


@dataclass(frozen=True)
class RecorderNodeConfig:
    """Everything recorder_node reads from its parameters."""

    recording: RecordingConfig = field(default_factory=RecordingConfig)
    topics: RecorderTopicsConfig = field(default_factory=RecorderTopicsConfig)


class RecorderNode(Node):
    """Records the episodes policy_node runs, one bag each."""

    def __init__(self):
        super().__init__('recorder_node')
        self.config = cfg = declare_config(self, RecorderNodeConfig)
        self.trouble = CauseLog(self.get_logger())
        t = cfg.topics
        streams = [*((topic, Image, 'camera', _STREAM, SENSOR_QOS) for topic in t.cameras),
                   (t.joint_states, JointState, 'observation', _STREAM, SENSOR_QOS),
                   (t.instruction, String, 'observation', _RELIABLE, RELIABLE_QOS),
                   (f'{t.controller}/joint_trajectory', JointTrajectory, 'command', _RELIABLE, RELIABLE_QOS),
                   (t.episode_event, EpisodeEvent, 'event', _LATCHED, LATCHED_QOS),
                   (t.chunk_stats, ChunkStats, 'chunk_stats', _RELIABLE, RELIABLE_QOS),
                   (t.episode_stats, EpisodeStats, 'episode_stats', _RELIABLE, RELIABLE_QOS)]
        recorded = []
        for topic, msg_type, role, qos, offered in streams:
            # the resolved name (namespace, remaps) is the one the bag stores; callbacks only run
            # once the node spins, after the recorder below exists
            sub = self.create_subscription(msg_type, topic, lambda data, i=len(recorded): self._on_message(i, data),
                                           qos, raw=True)
            recorded.append(RecordedTopic(sub.topic_name, _type_name(msg_type), role, offered))
        self._names = [r.name for r in recorded]
        self._publisher_counts = dict.fromkeys(self._names, 0)   # publisher count last logged per topic
        self._graph_checked_at = 0.0
        self.recorder = EpisodeRecorder(cfg.recording, recorded, log=self.get_logger().info)
        # wall-clock periods (grace, flush): with use_sim_time a ROS-clock timer would stand still
        # while a lockstep sim waits between episodes
        self.create_timer(0.1, self._poll, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f'recording {self._names} into {cfg.recording.output_dir}/<episode id> '
                               f'({cfg.recording.storage}, compression {cfg.recording.compression})')

    def _on_message(self, index: int, data: bytes) -> None:
        try:
            self.recorder.write(self._names[index], data, self.get_clock().now().nanoseconds)
        except Exception as err:  # noqa: BLE001 - a full disk or a bad message must not stop the recording
            self.trouble.error(f'write {self._names[index]}',
                               f'cannot record a message of {self._names[index]}: {type(err).__name__}: {err}')

    def _poll(self) -> None:
        try:
            self.recorder.poll()
        except Exception as err:  # noqa: BLE001
            self.trouble.error('poll', f'cannot flush or close a bag: {type(err).__name__}: {err}')
        if time.monotonic() - self._graph_checked_at >= 1.0:
            self._graph_checked_at = time.monotonic()
            self._log_publishers()

    def _log_publishers(self) -> None:
        """Say when a recorded topic's publishers come or go (a topic nobody publishes is a
        misnamed or unremapped one; and what is published before a publisher is discovered is lost)."""
        for name in self._names:
            count = self.count_publishers(name)
            if count != self._publisher_counts[name]:
                self._publisher_counts[name] = count
                self.get_logger().info(f'{name}: {count} publisher(s)')

    def shutdown(self) -> None:
        """Close every open bag (an episode still running is marked complete: false)."""
        self.recorder.close()


def _type_name(msg_type) -> str:
    """'sensor_msgs/msg/Image' of a generated message class."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


def main(args=None) -> int:
    return run_node(RecorderNode, 'recorder_node', args)


if __name__ == '__main__':
    raise SystemExit(main())
