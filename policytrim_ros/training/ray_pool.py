"""Rollouts on a Ray cluster: rollout workers are Ray actors, the trainer process is the one learner.

``RayRolloutPool`` has ``RolloutPool``'s interface (``collect(weights, jobs)`` in job order) and runs
the same ``RolloutWorker`` in every actor, so the same job gives the same rollout on any node
(``training.workers``); each actor steps ``envs_per_worker`` envs in lockstep through its share of
the jobs (``training.workers.shares``), as a local pool's process does. Each new weights version is
serialized once (safetensors bytes, no pickle) and put once in Ray's object store; every call
carries the version and the object's reference, and a worker fetches the weights only when its version changed. Shares go out as workers free up
(at most ``IN_FLIGHT`` queued on each), so slow episodes or slow nodes do not hold the others back.
A share whose worker died (a node lost, an actor killed) runs again on another one: jobs are
deterministic, so the result is the one it would have given.

With ``rollouts.robots`` the workers are robots instead (``nodes.robot_worker.RayRobotWorker``, one
per robot on the node that offers its resource: ``training.robots``): each runs its share, one job
at a time, as episodes of its machine's policy_node; the learner's side is the same.

Needs the optional extra: ``pip install 'policytrim_ros[ray]'``. Ray moves jobs and rollouts
between its processes with pickle, as ``multiprocessing`` does: every node of the cluster must be a
machine you trust, on a private network (docs/scale-out.md).
"""
from __future__ import annotations

import math
import os
import sys
from collections import deque

from policytrim_ros.config import import_object
from policytrim_ros.training.robots import missing_robots, robot_actor_options, robot_run_dir
from policytrim_ros.training.workers import RolloutJob, RolloutSetup, RolloutsConfig, RolloutWorker, shares

IN_FLIGHT = 2
"""Shares of jobs queued on each worker at once: the next starts while the driver collects the last."""

def _import_ray():
    try:
        import ray
    except ImportError:   # a RuntimeError: the CLI prints it as one line
        raise RuntimeError("rollouts.engine 'ray' needs Ray, an optional extra: pip install "
                           "'policytrim_ros[ray]' (or pip install -r requirements-ray.txt)") from None
    return ray


class RayRolloutWorker:
    """A Ray actor around a ``RolloutWorker`` (its envs and one model, built once)."""

    def __init__(self, setup: RolloutSetup):
        self.worker = RolloutWorker(setup)

    def node(self) -> str:
        """The Ray node id this worker runs on (also: the worker is built)."""
        import ray
        return ray.get_runtime_context().get_node_id()

    def run(self, version: int, weights: list, jobs: tuple[RolloutJob, ...]) -> tuple[int, list]:
        """(version, rollouts of the share ``jobs``) under weights ``version``: fetched from the object
        store (``weights[0]``, a reference inside a list so that Ray does not fetch it for every call) only
        when it is not the version loaded."""
        if version != self.worker.version:
            import ray
            from safetensors.torch import load
            self.worker.load(load(ray.get(weights[0])), version)
        return version, self.worker.run(jobs)


class RayRolloutPool:
    """Rollout workers as Ray actors: ``config.workers_per_node`` on every node that hosts workers.

    Use as a context manager, or call ``close``; a Ray instance the pool started ends with it.
    """

    def __init__(self, setup: RolloutSetup, config: RolloutsConfig, out_dir: str | None = None):
        ray = _import_ray()
        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            self._owns_ray = True
            if config.address:
                ray.init(address=config.address, log_to_driver=True)
            else:
                # one machine: it offers every robot's resource (simulated robots on their ROS domains)
                os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')   # no network at run time
                workers = len(config.robots) or config.workers_per_node
                ray.init(num_cpus=math.ceil(workers * config.cpus_per_worker),
                         resources={robot.resource: 1 for robot in config.robots},
                         include_dashboard=False, log_to_driver=True)
        try:
            if config.robots:
                self._actors = self._start_robots(setup, config, robot_run_dir(config.robot_run_dir, out_dir))
            else:
                self._actors = self._start(setup, config)
        except BaseException:
            self.close()
            raise
        self._envs_per_worker = 1 if config.robots else setup.envs_per_worker   # a robot runs one episode at a time
        self._version = 0
        self._weights = None   # [the current version's object reference]

    def _start(self, setup: RolloutSetup, config: RolloutsConfig) -> list:
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        resource = config.node_resource or 'CPU'   # by default every node with CPUs (not a --num-cpus=0 head)
        nodes = [n for n in ray.nodes() if n['Alive'] and n['Resources'].get(resource, 0) > 0]
        if not nodes and config.node_resource:
            raise RuntimeError(f"no node of the Ray cluster offers the resource '{resource}' "
                               "(rollouts.node_resource): start the rollout nodes with ray start "
                               f"--resources='{{\"{resource}\": 1}}'")
        if not nodes:
            raise RuntimeError('no node of the Ray cluster has CPUs for rollout workers')
        needed = config.workers_per_node * config.cpus_per_worker
        for n in nodes:
            if n['Resources'].get('CPU', 0) < needed:
                raise RuntimeError(f"node {n['NodeManagerAddress']} has {n['Resources'].get('CPU', 0):g} CPUs for "
                                   f'Ray, fewer than rollouts.workers_per_node ({config.workers_per_node}) x '
                                   f'cpus_per_worker ({config.cpus_per_worker:g})')
        remote = ray.remote(RayRolloutWorker)
        actors = [remote.options(num_cpus=config.cpus_per_worker,
                                 scheduling_strategy=NodeAffinitySchedulingStrategy(n['NodeID'], soft=False))
                  .remote(setup)
                  for n in nodes for _ in range(config.workers_per_node)]
        self._await(actors, config)
        print(f'rollouts: {len(actors)} Ray workers on {len(nodes)} nodes', file=sys.stderr, flush=True)
        return actors

    def _start_robots(self, setup: RolloutSetup, config: RolloutsConfig, run_dir: str) -> list:
        """One worker per robot, on the node that offers its resource (``nodes.robot_worker``)."""
        ray = self._ray
        problems = missing_robots(ray.nodes(), config.robots)
        if problems:
            raise RuntimeError('; '.join(problems))
        # By name (rollouts.robot_worker): the core never imports nodes/, and the default class imports
        # rclpy only inside the actor, on the robot's machine (the learner needs none).
        remote = ray.remote(import_object(config.robot_worker, 'rollouts.robot_worker'))
        actors = [remote.options(**robot_actor_options(robot, config.cpus_per_worker))
                  .remote(setup, robot, config.episodes, f'{run_dir}/{robot.resource}')
                  for robot in config.robots]
        self._await(actors, config)
        names = ', '.join(robot.resource for robot in config.robots)
        print(f'rollouts: {len(actors)} Ray robot workers ({names}); episodes kept under {run_dir}',
              file=sys.stderr, flush=True)
        return actors

    def _await(self, actors: list, config: RolloutsConfig) -> None:
        """Wait until every worker is built (``start_timeout_s``); else end them all and raise."""
        ray = self._ray
        try:
            ready, waiting = ray.wait([a.node.remote() for a in actors], num_returns=len(actors),
                                      timeout=config.start_timeout_s)
            if waiting:
                raise RuntimeError(f'{len(waiting)} of {len(actors)} rollout workers were not up after '
                                   f'rollouts.start_timeout_s ({config.start_timeout_s:g} s)')
            ray.get(ready)   # a worker whose env or model (or robot link) failed to build raises here
        except BaseException:
            for actor in actors:
                ray.kill(actor)
            raise

    @property
    def workers(self) -> int:
        """Rollout workers alive."""
        return len(self._actors)

    def collect(self, weights: dict | None, jobs: list[RolloutJob]) -> list:
        """Rollouts of ``jobs`` (in job order) under ``weights`` (a state dict of tensors), or with
        None under those of the previous collect (nothing put, nothing reloaded)."""
        ray = self._ray
        if weights is not None:
            from safetensors.torch import save
            cpu = {k: v.detach().to('cpu').contiguous().clone() for k, v in weights.items()}
            self._version += 1
            self._weights = [ray.put(save(cpu))]   # the previous version's object is freed with its reference
        elif self._weights is None:
            raise ValueError('the first collect needs weights')
        parts = shares(jobs, len(self._actors), self._envs_per_worker)
        results: list = [None] * len(parts)   # the rollouts of each share
        pending = deque(range(len(parts)))
        running: dict = {}   # object reference of a call -> (actor, share index)
        free = {a: IN_FLIGHT for a in self._actors}
        while pending or running:
            while pending:
                actor = max(self._actors, key=free.__getitem__)   # the least busy: shares go round the workers
                if not free[actor]:
                    break
                index = pending.popleft()
                running[actor.run.remote(self._version, self._weights, parts[index])] = (actor, index)
                free[actor] -= 1
            [done], _ = ray.wait(list(running), num_returns=1)
            actor, index = running.pop(done)
            try:
                version, results[index] = ray.get(done)
            except ray.exceptions.RayActorError as err:   # the worker (or its node) is gone: run the share elsewhere
                pending.appendleft(index)
                if actor in free:
                    self._actors.remove(actor)
                    del free[actor]
                    print(f'rollouts: a Ray worker was lost ({type(err).__name__}), {len(self._actors)} left; '
                          'its jobs run again on the others', file=sys.stderr, flush=True)
                if not self._actors:
                    raise RuntimeError('every rollout worker of the Ray cluster is gone') from err
                continue
            if version != self._version:   # cannot happen unless the bookkeeping above is broken
                raise RuntimeError(f'share {index} ran weights version {version}, not {self._version}')
            if actor in free:
                free[actor] += 1
        return [rollout for share in results for rollout in share]

    def close(self) -> None:
        """End the workers (and the Ray instance, if this pool started it)."""
        ray = self._ray
        for actor in getattr(self, '_actors', []):
            ray.kill(actor)
        self._actors = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    def __enter__(self) -> RayRolloutPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
