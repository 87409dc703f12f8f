"""A robot as a Ray rollout worker: an actor on the robot's machine that runs the learner's jobs as
episodes of that machine's policy_node.

``RayRolloutPool`` (``rollouts.robots``) starts one ``RayRobotWorker`` per robot on the Ray node that
offers the robot's resource. The actor owns an rclpy context of its own (on the robot's
``ros_domain_id``, or the Ray node's ROS_DOMAIN_ID), a node in the robot's namespace, and
trainer_node's ``RosRollouts`` over them: hot weight reloads (LoadWeights), ConfigureEpisode, the
reset through ``sim/reset_episode`` or an operator, and the ``EpisodeStore`` under its run folder on
this machine (a restarted learner reuses what a robot already ran under the same weights). It answers
the pool's ``run(version, [weights reference], jobs)`` as ``ray_pool.RayRolloutWorker`` does, so the
learner cannot tell a robot from a simulator.

rclpy is imported only inside the actor: the learner imports this module to name the actor class and
needs no ROS. Start each robot's Ray node from a shell with its ROS environment (docs/scale-out.md).
"""
from __future__ import annotations

import threading
from pathlib import Path


class RayRobotWorker:
    """A Ray actor that drives one robot's policy_node (``training.robots.RobotWorkerConfig``)."""

    def __init__(self, setup, robot, episodes, run_dir: str):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.signals import SignalHandlerOptions

        from policytrim_ros.nodes.runtime import ros_environment_defaults
        from policytrim_ros.nodes.trainer_node import RosRollouts
        ros_environment_defaults()   # DDS discovery on this machine unless the robot's shell chose otherwise
        self.setup, self.robot = setup, robot
        self.context = rclpy.Context()
        domain = {'domain_id': robot.ros_domain_id} if robot.ros_domain_id >= 0 else {}
        # no signal handlers: the actor is not the process's main program, Ray ends it
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO, **domain)
        self.ros_node = Node('robot_worker', namespace=robot.namespace or None, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.ros_node)
        self.stop = threading.Event()
        self.rollouts = RosRollouts(self.ros_node, episodes, Path(run_dir).expanduser(), self.stop)(setup)
        self._spinner = threading.Thread(target=self._spin, daemon=True)   # answers while run() waits
        self._spinner.start()
        self.version: int | None = None   # the pool's weights version last handed to RosRollouts
        self.ros_node.get_logger().info(
            f'robot worker {robot.resource} on ROS domain {self.context.get_domain_id()}, namespace '
            f"'{self.ros_node.get_namespace()}', episodes under {run_dir}")

    def _spin(self) -> None:
        while self.context.ok() and not self.stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:   # the context is shutting down
                return

    def node(self) -> str:
        """The Ray node id this worker runs on (also: the worker is built)."""
        import ray
        return ray.get_runtime_context().get_node_id()

    def run(self, version: int, weights: list, jobs: tuple) -> tuple[int, list]:
        """(version, rollouts of ``jobs`` in order), one episode of the robot after the other, under
        the weights ``version`` (fetched from the object store, ``weights[0]``, only when it changed)."""
        state = None
        if version != self.version:
            import ray
            from safetensors.torch import load
            state = load(ray.get(weights[0]))
        rollouts = self.rollouts.collect(state, list(jobs))
        self.version = version
        self._check_step_limit(rollouts)
        return version, rollouts

    def _check_step_limit(self, rollouts: list) -> None:
        """The robot's policy_node must stop episodes at the learner's max_episode_steps: rewards count
        steps against it (trainer_node checks the parameter file; here, every episode that reached a limit)."""
        from policytrim_ros import constants as C
        from policytrim_ros.nodes.trainer_node import RobotSideError
        limit = self.setup.max_episode_steps
        for rollout in rollouts:
            m = rollout.metrics
            if m.steps > limit or (m.end_reason == C.END_MAX_STEPS and m.steps != limit):
                raise RobotSideError(f'robot {self.robot.resource}: episode {m.episode_id} ran {m.steps} steps '
                                     f'({m.end_reason}), but the learner\'s max_episode_steps is {limit}: set '
                                     'policy_node\'s execution.max_episode_steps to it')

    def close(self) -> None:
        """Stop waiting, end the node and the context (Ray calls it when the actor exits gracefully)."""
        import rclpy
        self.stop.set()
        self._spinner.join(timeout=2.0)
        self.executor.shutdown()
        self.ros_node.destroy_node()
        rclpy.utilities.try_shutdown(context=self.context)

    __ray_shutdown__ = close
