"""policy_node's configuration: one frozen dataclass per parameter section (no ROS imports).

Every field is a read-only ROS parameter of policy_node (``nodes/params.py``): set it in a params
file or with ``-p``; ``ros2 param describe /policy_node <name>`` shows these docstrings.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from policytrim_ros.config import check_node_name, check_seconds, suggest
from policytrim_ros.execution.config import ExecutionConfig, SafetyConfig
from policytrim_ros.policy.factory import PolicyConfig
from policytrim_ros.robots.arm import JOINT_NAMES

CONTROLLER_INTERFACES = ('topic', 'action')
WINDOW_ENDS = ('auto', 'moving', 'rest')


@dataclass(frozen=True)
class ControllerConfig:
    """The joint_trajectory_controller (JTC) that executes the windows.

    name: the controller's node name, relative (namespaced) or absolute: windows go to
        <name>/joint_trajectory or <name>/follow_joint_trajectory, and its parameters are read
        through <name>'s parameter services.
    interface: topic (trajectory_msgs/JointTrajectory, fire and forget) or action
        (control_msgs/FollowJointTrajectory: a goal per window, the controller's rejections and
        tolerance aborts end the episode with their own end_reason, a cancel is the hold).
    window_end: auto, moving or rest. moving ends each window at the chunk's velocity (seamless;
        the controller needs allow_nonzero_velocity_at_trajectory_end: true); rest ends it at zero
        velocity (accepted by every controller, stop-and-go at seams); auto reads that parameter
        from the controller (moving if true, rest if false or unreadable, said in the log).
    parameter_timeout_s: seconds to wait at start-up for the controller's parameter services
        (then again, in the background, at each episode start until it answers); 0 = never read
        them (for a controller without parameter services: window_end auto then means rest).
    """

    name: str = 'arm_controller'
    interface: str = 'topic'
    window_end: str = 'auto'
    parameter_timeout_s: float = 5.0

    def __post_init__(self):
        check_node_name(self.name)
        if self.interface not in CONTROLLER_INTERFACES:
            raise ValueError(f"interface '{self.interface}' must be one of {list(CONTROLLER_INTERFACES)}"
                             f'{suggest(self.interface, CONTROLLER_INTERFACES)}')
        if self.window_end not in WINDOW_ENDS:
            raise ValueError(f"window_end '{self.window_end}' must be one of {list(WINDOW_ENDS)}"
                             f'{suggest(self.window_end, WINDOW_ENDS)}')
        check_seconds(self, 'parameter_timeout_s', zero=True)

    @property
    def trajectory_topic(self) -> str:
        return f'{self.name}/joint_trajectory'

    @property
    def action_name(self) -> str:
        return f'{self.name}/follow_joint_trajectory'


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
    episode_stats: policytrim_ros/EpisodeStats, one per finished episode.
    chunk_stats: policytrim_ros/ChunkStats, one per inference call.
    load_weights: policytrim_ros/LoadWeights service (with trainer.enabled).
    configure_episode: policytrim_ros/ConfigureEpisode service (with trainer.enabled).
    """

    cameras: tuple[str, ...] = ()
    joint_states: str = 'joint_states'
    instruction: str = 'instruction'
    episode_event: str = 'episode/event'
    object_poses: str = 'sim/object_poses'
    episode_stats: str = 'policytrim/episode_stats'
    chunk_stats: str = 'policytrim/chunk_stats'
    load_weights: str = 'policytrim/load_weights'
    configure_episode: str = 'policytrim/configure_episode'


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
    """Episode bookkeeping and input timing.

    task: task label for episodes started by a plain instruction ('' = use the instruction).
    log_path: JSONL file that gets one line per finished episode ('' = no file). Episode ids
        already in it are never run again (a restarted node ignores the latched START of an
        episode it had finished).
    max_observation_age_s: observations older than this (node clock) are rejected as stale.
    max_future_stamp_s: observations stamped further than this ahead of the node clock are
        rejected (a clock jump or a wrong stamp would otherwise delay every window by as much).
    joint_states_timeout_s: a running episode whose joint_states stopped arriving for this many
        wall-clock seconds ends with end_reason joint_states_lost (a dead driver or simulator).
    inference_timeout_s: an inference call still running after this many wall-clock seconds ends
        the episode with end_reason inference_timeout (a hung model; the remote backend's own
        policy.remote.timeout_s usually fires first). Later episodes wait for that call to return.
    """

    task: str = ''
    log_path: str = 'policytrim_episodes.jsonl'
    max_observation_age_s: float = 1.0
    max_future_stamp_s: float = 0.05
    joint_states_timeout_s: float = 3.0
    inference_timeout_s: float = 30.0

    def __post_init__(self):
        check_seconds(self, 'max_observation_age_s', 'joint_states_timeout_s', 'inference_timeout_s')
        check_seconds(self, 'max_future_stamp_s', zero=True)


@dataclass(frozen=True)
class TrainerLinkConfig:
    """Training episodes for a trainer (trainer_node, `ros2 launch policytrim_ros train.launch.py`).

    enabled: offer the load_weights and configure_episode services, through which a trainer
        hot-reloads the policy's weights between episodes and makes an episode sample its chunks
        (or its h) for RL. Off by default: a deployed arm runs the weights it was started with,
        at their means, and no other process can change that. Needs the torch backend.
    max_pending_plans: configured episodes kept until their START arrives (the oldest dropped).
    """

    enabled: bool = False
    max_pending_plans: int = 64

    def __post_init__(self):
        if self.max_pending_plans < 1:
            raise ValueError(f'max_pending_plans ({self.max_pending_plans}) must be >= 1')


@dataclass(frozen=True)
class PolicyNodeConfig:
    """Everything policy_node reads from its parameters."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    robot: RobotConfig = field(default_factory=RobotConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)
    topics: PolicyTopicsConfig = field(default_factory=PolicyTopicsConfig)
    trainer: TrainerLinkConfig = field(default_factory=TrainerLinkConfig)
