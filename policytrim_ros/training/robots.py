"""Robots as rollout workers: their configs and the pool's pure choices (no rclpy, no Ray here).

With ``rollouts.robots`` a ``RayRolloutPool``'s workers are robots (or simulators standing in for
them): one Ray actor per robot (``nodes.robot_worker.RayRobotWorker``), placed on the Ray node that
offers the robot's custom resource, runs each job as one episode of that machine's policy_node, as
trainer_node does on one machine (``EpisodeLinkConfig``: how an episode is reset, waited for and
judged). docs/scale-out.md, "Robots as rollout workers".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from policytrim_ros.config import check_seconds

RESETS = ('service', 'operator')
RAY_RESOURCES = ('CPU', 'GPU', 'memory', 'object_store_memory')
"""Ray's own resources: a robot is marked by a custom one."""


@dataclass(frozen=True)
class EpisodeLinkConfig:
    """How episodes run on the robot side (trainer_node's ``episodes.*`` parameters, and
    ``rollouts.episodes`` for robots as Ray workers).

    reset: service (the simulator's ResetEpisode service) or operator (a person resets a real arm:
        the log prompts, and ``trainer/reset_done`` (std_srvs/Trigger) answers).
    reset_service: the simulator's policytrim_ros/ResetEpisode service.
    episode_timeout_s: wall seconds an episode may take from its reset to its EpisodeStats before it
        is run again; the wait also ends early when policy_node disappears.
    settle_s: wall seconds between an episode's end and the next reset (reset service): the hold
        policy_node sends at an episode's end travels on another topic than the reset, and a hold
        that reached the simulator after the reset would move the new episode's arm.
    operator_timeout_s: wall seconds to wait for the operator's reset_done (then the prompt repeats).
    outcome_timeout_s: with reset operator and no detector: wall seconds to wait for the operator's
        ``trainer/outcome`` (std_srvs/SetBool: true = success) after the policy stopped.
    discovery_timeout_s: wall seconds to wait for policy_node's services (and the simulator's) before
        the run stops with an error.
    max_attempts: runs of one episode the robot side may cut short before the run stops.
    episode_stats, episode_event, load_weights, configure_episode: policy_node's topics and services.
    """

    reset: str = 'service'
    reset_service: str = 'sim/reset_episode'
    episode_timeout_s: float = 120.0
    settle_s: float = 0.5
    operator_timeout_s: float = 600.0
    outcome_timeout_s: float = 120.0
    discovery_timeout_s: float = 60.0
    max_attempts: int = 5
    episode_stats: str = 'policytrim/episode_stats'
    episode_event: str = 'episode/event'
    load_weights: str = 'policytrim/load_weights'
    configure_episode: str = 'policytrim/configure_episode'

    def __post_init__(self):
        if self.reset not in RESETS:
            raise ValueError(f"reset '{self.reset}' must be one of {list(RESETS)}")
        check_seconds(self, 'episode_timeout_s', 'operator_timeout_s', 'outcome_timeout_s', 'discovery_timeout_s')
        check_seconds(self, 'settle_s', zero=True)
        if self.max_attempts < 1:
            raise ValueError(f'max_attempts ({self.max_attempts}) must be >= 1')


def is_resource_name(name: str) -> bool:
    """A Ray custom resource name as ``ray start --resources`` takes it: letters, digits, _ and -."""
    return bool(name) and name.replace('-', '_').isidentifier()


@dataclass(frozen=True)
class RobotWorkerConfig:
    """One robot (or a simulator standing in for one) as a Ray rollout worker.

    resource: the Ray custom resource that marks the robot's machine (``ray start
        --resources='{"arm1": 1}'`` there); its worker runs on the node that offers it, and takes
        all of it: one worker per robot.
    ros_domain_id: the ROS_DOMAIN_ID of the robot's nodes (0-232); -1 = the one of the shell that
        started the Ray node. Two simulated robots on one machine differ here (or in ``namespace``).
    namespace: the ROS namespace of the robot's policy_node and simulator ('' = none, '/arm1').
    """

    resource: str = ''   # required: '' is refused with the rule (a missing key is no TypeError)
    ros_domain_id: int = -1
    namespace: str = ''

    def __post_init__(self):
        if not is_resource_name(self.resource):
            raise ValueError(f"resource '{self.resource}' must be a Ray custom resource name "
                             '(letters, digits, _ and -)')
        if self.resource in RAY_RESOURCES:
            raise ValueError(f"resource '{self.resource}' must be a custom resource, not one of Ray's own "
                             f'{list(RAY_RESOURCES)}')
        if not (self.ros_domain_id == -1 or 0 <= self.ros_domain_id <= 232):
            raise ValueError(f'ros_domain_id ({self.ros_domain_id}) must be -1 (the Ray node\'s ROS_DOMAIN_ID) '
                             'or 0-232')
        parts = self.namespace.strip('/').split('/')
        if self.namespace and not all(part.isidentifier() for part in parts):
            raise ValueError(f"namespace '{self.namespace}' must be '' or a ROS namespace (names of letters, "
                             "digits and _ between /, e.g. '/arm1')")


def check_robots(robots: tuple[RobotWorkerConfig, ...], robot_run_dir: str) -> None:
    """The rules across ``rollouts.robots`` (each entry checks its own fields)."""
    seen: dict[str, int] = {}
    for i, robot in enumerate(robots):
        if robot.resource in seen:
            raise ValueError(f"rollouts.robots[{i}].resource '{robot.resource}' is also "
                             f'rollouts.robots[{seen[robot.resource]}]\'s: each robot needs a resource of its own')
        seen[robot.resource] = i
    if robot_run_dir and not PurePosixPath(robot_run_dir).is_absolute() and not robot_run_dir.startswith('~'):
        raise ValueError(f"rollouts.robot_run_dir '{robot_run_dir}' must be an absolute path (or start with ~): "
                         "it is used on each robot's machine, where the working directory is Ray's")


def robot_actor_options(robot: RobotWorkerConfig, cpus_per_worker: float) -> dict:
    """Ray ``.options`` of a robot's worker: the whole of its robot's resource (so it lands on that
    machine, one worker per robot) and its CPUs."""
    return {'num_cpus': cpus_per_worker, 'resources': {robot.resource: 1}}


def missing_robots(nodes: list[dict], robots: tuple[RobotWorkerConfig, ...]) -> list[str]:
    """Why robots cannot be placed on the Ray cluster whose ``ray.nodes()`` are ``nodes`` ([] = all can):
    a robot's resource offered by no live node, or by several (which machine is the robot?)."""
    problems = []
    for i, robot in enumerate(robots):
        offering = [n for n in nodes if n['Alive'] and n['Resources'].get(robot.resource, 0) >= 1]
        if not offering:
            problems.append(f"no node of the Ray cluster offers the resource '{robot.resource}' "
                            f"(rollouts.robots[{i}]): on that robot's machine, from a shell with its ROS "
                            f"environment, ray start --address=HEAD:PORT --resources='{{\"{robot.resource}\": 1}}'")
        elif len(offering) > 1:
            problems.append(f"{len(offering)} nodes of the Ray cluster offer the resource '{robot.resource}' "
                            f'(rollouts.robots[{i}]): only its robot\'s machine may')
    return problems


def robot_run_dir(robot_run_dir: str, out_dir: str | None) -> str:
    """Where the robots' workers keep their episodes and weights (``<it>/<resource>/`` each): the
    config's ``robot_run_dir``, or '' there = ``<out_dir>/robots`` as an absolute path of the learner's
    machine (the same path on each robot's machine)."""
    if robot_run_dir:
        return robot_run_dir
    if not out_dir:
        raise ValueError("rollouts.robot_run_dir is '' and no run folder was given: set rollouts.robot_run_dir")
    return str(Path(out_dir).resolve() / 'robots')
