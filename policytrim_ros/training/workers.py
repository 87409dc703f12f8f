"""Parallel RL rollouts: a pool of spawned processes, each with its envs and a copy of the policy.

Every ``collect`` call with weights writes them once to a safetensors file in the pool's temporary
folder (a new version; ``collect(None, ...)`` reuses the last); a worker loads them when their
version changed. A job names the task, initial-state seed, executed length h and exploration-noise
seed, so the same job gives the same rollout in any worker, alone or in a lockstep batch with
other jobs (``RolloutSetup.envs_per_worker``; in this process too, up to the last float bit if
torch already ran here with other thread settings). The env is the one of the tasks' suite: the
embedded arm or Meta-World.
``RolloutsConfig`` picks this pool or ``training.ray_pool.RayRolloutPool`` (the same workers as
actors on a Ray cluster); ``training.engines.open_rollouts`` opens the one it names.
"""
from __future__ import annotations

import multiprocessing as mp
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from policytrim_ros.config import IMPORT_SPEC
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.metaworld_config import MetaWorldConfig
from policytrim_ros.execution.config import SafetyConfig
from policytrim_ros.policy.vla.configuration_vla import VLAConfig
from policytrim_ros.training.exploration import ExplorationConfig
from policytrim_ros.training.robots import EpisodeLinkConfig, RobotWorkerConfig, check_robots, is_resource_name


SAMPLES = ('chunk', 'horizon')


@dataclass(frozen=True)
class RolloutJob:
    """One episode to roll out: ``task`` from initial-state ``seed``, executing ``n_action_steps``
    of each chunk, with exploration noise from ``noise_seed``; with sample 'horizon', the first
    calls' h ``forced`` (indices into the head's horizons) and, with ``greedy``, the head's most
    likely h after them instead of a draw."""

    task: str
    seed: int
    n_action_steps: int
    noise_seed: int
    episode_id: str = ''
    forced: tuple[int, ...] = ()
    greedy: bool = False


@dataclass(frozen=True)
class RolloutSetup:
    """What every worker builds once: the env, the model's shape and the execution limits.

    tasks: the tasks the jobs will name; their suite picks the env (``envs.factory.make_env``):
        ``env`` configures the embedded arm, ``metaworld`` Meta-World.
    max_episode_steps: step limit per rollout. control_dt: seconds per action (the env's).
    exploration: the structure of the chunks' sampling noise.
    sample: what a rollout samples: 'chunk' (Gaussian chunks around the VLA's mean, h fixed per job:
        Stage 1 and 2) or 'horizon' (the VLA's mean chunks, each call's h drawn from its efficiency
        head, the job's n_action_steps the longest: ``training.horizon``).
    envs_per_worker: envs each worker steps in lockstep, their inference calls answered by one
        batched forward (``training.lockstep``); a rollout is the same with any number.
    """

    model: VLAConfig
    env: EnvConfig
    safety: SafetyConfig
    max_episode_steps: int = 150
    control_dt: float = 0.1
    tasks: tuple[str, ...] = ('reach', 'push', 'pick_place')
    metaworld: MetaWorldConfig = field(default_factory=MetaWorldConfig)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    sample: str = 'chunk'
    envs_per_worker: int = 1

    def __post_init__(self):
        if self.sample not in SAMPLES:
            raise ValueError(f"sample '{self.sample}' must be one of {list(SAMPLES)}")
        if self.envs_per_worker < 1:
            raise ValueError(f'envs_per_worker ({self.envs_per_worker}) must be >= 1')


ENGINES = ('local', 'ray')


@dataclass(frozen=True)
class RolloutsConfig:
    """Where a trainer's rollouts run (``rollouts:`` in the training YAMLs; docs/scale-out.md).

    engine: 'local' (a ``RolloutPool`` of the trainer's ``workers`` processes on this machine) or
        'ray' (``training.ray_pool.RayRolloutPool``: rollout workers are Ray actors on this machine or
        on the nodes of a Ray cluster; needs the extra: ``pip install 'policytrim_ros[ray]'``).
    address: with engine 'ray', the cluster: '' starts a private Ray instance on this machine for the
        run (stopped at its end); 'auto' joins the cluster this machine joined with ``ray start``;
        'HOST:PORT' the cluster whose head's GCS listens there; 'ray://HOST:PORT' through Ray Client
        (needs ``ray[client]``).
    workers_per_node: rollout workers (each ``envs_per_worker`` envs and one copy of the model) on every
        node that hosts workers: 'local' ignores it (the trainer's ``workers`` counts its processes).
    node_resource: if set, only nodes that offer this Ray custom resource host workers (``ray start
        --resources='{"rollouts": 1}'`` on the sim boxes; the learner's machine without it); '' = every
        node of the cluster that has CPUs for Ray.
    cpus_per_worker: CPUs Ray reserves for each worker (its torch runs 1 thread).
    start_timeout_s: seconds to wait for every worker to build its env and model; a worker no node can
        place (too few CPUs) stops the run with a message instead of waiting forever.
    robots: with engine 'ray', robots (or simulators standing in for them) as the workers instead of
        simulators: one worker each (``training.robots.RobotWorkerConfig``: its Ray resource, ROS domain
        and namespace), running each job as one episode of that robot's policy_node; [] = simulators.
    episodes: with robots, how their episodes run (reset, timeouts, policy_node's topics): trainer_node's
        ``episodes.*`` (``training.robots.EpisodeLinkConfig``).
    robot_run_dir: with robots, the folder on each robot's machine where its worker keeps its finished
        episodes and weights (``<robot_run_dir>/<resource>/``, as trainer_node keeps them in its
        out_dir): '' = ``<out_dir>/robots``, the learner's run folder as an absolute path.
    robot_worker: with robots, the Ray actor class each robot runs, 'module:Class' (default: the ROS 2
        one, ``nodes.robot_worker.RayRobotWorker``): named, not imported, so that the core never
        imports nodes/ (a driver of another robot stack can take its place).
    """

    engine: str = 'local'
    address: str = ''
    workers_per_node: int = 2
    node_resource: str = ''
    cpus_per_worker: float = 1.0
    start_timeout_s: float = 300.0
    robots: tuple[RobotWorkerConfig, ...] = ()
    episodes: EpisodeLinkConfig = field(default_factory=EpisodeLinkConfig)
    robot_run_dir: str = ''
    robot_worker: str = 'policytrim_ros.nodes.robot_worker:RayRobotWorker'

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"rollouts.engine '{self.engine}' must be one of {list(ENGINES)}")
        address = self.address
        host, _, port = address.removeprefix('ray://').rpartition(':')
        if address not in ('', 'auto') and not (host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"rollouts.address '{address}' must be '' (a Ray instance on this machine), "
                             "'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
        if self.workers_per_node < 1:
            raise ValueError(f'rollouts.workers_per_node ({self.workers_per_node}) must be >= 1')
        if self.node_resource and not is_resource_name(self.node_resource):
            raise ValueError(f"rollouts.node_resource '{self.node_resource}' must be a resource name "
                             "(letters, digits, _ and -) or ''")
        if not self.cpus_per_worker > 0:
            raise ValueError(f'rollouts.cpus_per_worker ({self.cpus_per_worker}) must be > 0')
        if not self.start_timeout_s > 0:
            raise ValueError(f'rollouts.start_timeout_s ({self.start_timeout_s}) must be > 0')
        if self.robots and self.engine != 'ray':
            raise ValueError(f"rollouts.robots needs rollouts.engine 'ray' (not '{self.engine}'): robots are Ray "
                             'workers (trainer_node runs one robot without Ray)')
        if self.robots and self.node_resource:
            raise ValueError(f"rollouts.node_resource ('{self.node_resource}') places simulator workers: with "
                             'rollouts.robots each robot\'s worker goes where its own resource is; leave it out')
        check_robots(self.robots, self.robot_run_dir)
        if not IMPORT_SPEC.match(self.robot_worker):
            raise ValueError(f"rollouts.robot_worker '{self.robot_worker}' must be 'module:Class' "
                             "(e.g. 'policytrim_ros.nodes.robot_worker:RayRobotWorker')")


class RolloutWorker:
    """``setup.envs_per_worker`` envs and one copy of the model, built once; rolls out shares of
    jobs in lockstep (``training.lockstep``) under the weights last loaded.

    What every rollout worker runs: a process of ``RolloutPool``, an actor of ``RayRolloutPool``,
    or this process (``RolloutPool(setup, 0)``).
    """

    def __init__(self, setup: RolloutSetup):
        import torch

        from policytrim_ros.envs.factory import make_env
        from policytrim_ros.policy.vla.modeling_vla import VLAModel
        from policytrim_ros.training.lockstep import batch_invariant
        torch.set_num_threads(1)   # one core per worker
        self.setup = setup
        self.envs = [make_env(setup.tasks, setup.env, setup.metaworld) for _ in range(setup.envs_per_worker)]
        self.model = batch_invariant(VLAModel(setup.model).eval())
        self.version: int | None = None   # of the weights loaded, None before the first

    def load(self, weights: dict, version: int) -> None:
        """Load ``weights`` (a state dict of tensors) as ``version``."""
        self.model.load_state_dict(weights)
        self.version = version

    def run(self, jobs: tuple[RolloutJob, ...]) -> list:
        """The rollouts of ``jobs`` (a share: ``shares``), in job order, run in lockstep on this
        worker's envs (``Rollout``s, or with sample 'horizon' ``HorizonRollout``s)."""
        from policytrim_ros.training.lockstep import run_lockstep
        if self.version is None:
            raise RuntimeError('a rollout worker runs jobs only after its first weights were loaded')
        return run_lockstep(self.envs, jobs, self._start)

    def _start(self, env, job: RolloutJob):
        """Begin ``job`` on ``env``: its episode, the sampling policy with the job's own generator, and
        how its result is made (``training.lockstep.Started``)."""
        import torch

        from policytrim_ros.execution.config import ExecutionConfig
        from policytrim_ros.execution.episode import play_episode
        from policytrim_ros.training.exploration import ChunkNoise
        from policytrim_ros.training.lockstep import Started
        from policytrim_ros.training.rollout import SamplingVLAPolicy, finish_rollout
        setup = self.setup
        episode_id = job.episode_id or f'{job.task}-{job.seed}-h{job.n_action_steps}'
        generator = torch.Generator().manual_seed(job.noise_seed)
        if setup.sample == 'horizon':
            from policytrim_ros.training.horizon import HorizonSamplingPolicy, finish_horizon_rollout
            execution = ExecutionConfig(setup.model.chunk_size, job.n_action_steps, setup.control_dt,
                                        setup.max_episode_steps, horizon='learned')
            policy = HorizonSamplingPolicy(self.model, generator, forced=job.forced, greedy=job.greedy)
            return Started(play_episode(env, policy.metadata, execution, job.task, job.seed, episode_id, setup.safety),
                           policy, lambda metrics, records: finish_horizon_rollout(policy, metrics, records))
        execution = ExecutionConfig(setup.model.chunk_size, job.n_action_steps, setup.control_dt,
                                    setup.max_episode_steps)
        policy = SamplingVLAPolicy(self.model, generator, noise=ChunkNoise(setup.exploration))
        return Started(play_episode(env, policy.metadata, execution, job.task, job.seed, episode_id, setup.safety),
                       policy, lambda metrics, records: finish_rollout(policy, execution, metrics, records,
                                                                       env.instruction))


def shares(jobs: list, workers: int, envs_per_worker: int) -> list[tuple]:
    """``jobs`` cut into consecutive shares, each rolled out by one worker in lockstep: one job each
    with one env a worker (any free worker takes the next job), else about 4 x envs_per_worker
    jobs (a share's last episodes run in a smaller batch), and at least one share per worker."""
    if not jobs:
        return []
    size = 1 if envs_per_worker == 1 else min(4 * envs_per_worker, -(-len(jobs) // max(workers, 1)))
    return [tuple(jobs[i:i + size]) for i in range(0, len(jobs), size)]


_worker: RolloutWorker | None = None   # the pool process's own (or this process's, with 0 workers)


def _init(setup: RolloutSetup) -> None:
    global _worker
    _worker = RolloutWorker(setup)


def _run(args: tuple[int, str, tuple[RolloutJob, ...]]) -> list:
    """Roll out a share of the jobs in lockstep on this process's worker."""
    from policytrim_ros.policy.checkpoint import load_tensors
    version, weights_path, jobs = args
    if version != _worker.version:
        _worker.load(load_tensors(weights_path), version)
    return _worker.run(jobs)


class RolloutPool:
    """``workers`` spawned processes (0 = run in this process) that roll out jobs in order.

    Use as a context manager, or call ``close``.
    """

    def __init__(self, setup: RolloutSetup, workers: int):
        if workers < 0:
            raise ValueError(f'workers ({workers}) must be >= 0 (0 = in this process)')
        self._workers, self._envs_per_worker = workers, setup.envs_per_worker
        self._pool = mp.get_context('spawn').Pool(workers, _init, (setup,)) if workers else None
        if self._pool is None:
            _init(setup)
        self._folder = tempfile.TemporaryDirectory(prefix='policytrim-rollout-')
        self._version = 0
        self._path: str | None = None   # the weights file of the current version

    def collect(self, weights: dict | None, jobs: list[RolloutJob]) -> list:
        """Rollouts of ``jobs`` (in job order) under ``weights`` (a state dict of tensors), or with
        None under those of the previous collect (nothing written, nothing reloaded)."""
        from policytrim_ros.policy.checkpoint import save_tensors
        if weights is not None:
            previous = self._path
            self._version += 1
            self._path = str(Path(self._folder.name) / f'weights-{self._version}.safetensors')
            save_tensors(self._path, weights)
            if previous:
                Path(previous).unlink()   # no worker loads an older version than this one again
        elif self._path is None:
            raise ValueError('the first collect needs weights')
        args = [(self._version, self._path, share) for share in shares(jobs, self._workers, self._envs_per_worker)]
        results = [_run(a) for a in args] if self._pool is None else self._pool.map(_run, args, chunksize=1)
        return [rollout for share in results for rollout in share]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
        self._folder.cleanup()

    def __enter__(self) -> RolloutPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

