"""The forced-horizon sweep without ROS: N episodes per task for each executed length h.

The tasks are the embedded arm's or Meta-World's (``envs.factory``). Episodes are spread over
worker processes (spawned, each with its own env and policy, since a MuJoCo GL context and a torch
model do not survive a fork well). Episode k of a task uses seed ``seed + k`` for every h, so the
rows of a sweep are paired.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from policytrim_ros.config import from_dict, load_yaml, ros_parameters
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.factory import suite_control_dt, task_step_limit, task_suite
from policytrim_ros.envs.metaworld_config import MetaWorldConfig
from policytrim_ros.execution.config import ExecutionConfig, SafetyConfig
from policytrim_ros.execution.metrics import EpisodeMetrics
from policytrim_ros.policy.factory import PolicyConfig


@dataclass(frozen=True)
class SweepConfig:
    """One sweep.

    policy: the backend and checkpoint to evaluate.
    tasks: task names, all of the embedded arm or all of Meta-World (its 50 v3 tasks, names ending in '-v3').
    n_action_steps: the executed lengths h to evaluate.
    chunk_size: H of the policy.
    episodes: episodes per task and h.
    seed: seed of each task's first episode (evaluation seeds start at 1000, demos use 0-999).
    control_dt: seconds per control step; must equal the env's (env.control_dt on the arm,
        ``robots.metaworld.CONTROL_DT`` = 0.0125 s on Meta-World).
    max_episode_steps: step limit per episode (a Meta-World task with a longer ``step_limit`` of its
        own, see ``robots.metaworld_tasks``, gets that one: ``envs.factory.task_step_limit``).
    workers: worker processes (0 = one per CPU core).
    env: the embedded arm's env (used for arm tasks).
    metaworld: the Meta-World env (used for Meta-World tasks).
    safety: limits every chunk is checked against (the arm's joint limits do not fit Meta-World's
        hand deltas; Meta-World clips actions to [-1, 1] itself).
    horizon, replan_threshold, replan_min_steps: as in ExecutionConfig (divergence: each h of the
        sweep is the longest a window runs).
    """

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    tasks: tuple[str, ...] = ('reach', 'push', 'pick_place')
    n_action_steps: tuple[int, ...] = (1, 2, 4, 8, 16)
    chunk_size: int = 16
    episodes: int = 50
    seed: int = 1000
    control_dt: float = 0.1
    max_episode_steps: int = 150
    workers: int = 0
    env: EnvConfig = field(default_factory=EnvConfig)
    metaworld: MetaWorldConfig = field(default_factory=MetaWorldConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    horizon: str = 'fixed'
    replan_threshold: tuple[float, ...] = ()
    replan_min_steps: int = 1

    def __post_init__(self):
        if not self.tasks or not self.n_action_steps:
            raise ValueError('tasks and n_action_steps must not be empty')
        suite = task_suite(self.tasks)  # unknown or mixed tasks fail here, not in a worker
        env_dt = suite_control_dt(suite, self.env)
        if abs(self.control_dt - env_dt) > 1e-9:
            raise ValueError(f'control_dt ({self.control_dt}) must equal the control step of the {suite} env '
                             f'({env_dt} s) for tasks {list(self.tasks)}')
        for h in self.n_action_steps:
            self.execution(h)  # validates h (and the divergence settings for it)
        if self.episodes < 1:
            raise ValueError(f'episodes ({self.episodes}) must be >= 1')

    def execution(self, h: int, task: str | None = None) -> ExecutionConfig:
        """How episodes run at executed length ``h``; with ``task``, at that task's step limit."""
        steps = self.max_episode_steps if task is None else task_step_limit(task, self.max_episode_steps)
        return ExecutionConfig(self.chunk_size, h, self.control_dt, steps, self.horizon,
                               self.replan_threshold, min(self.replan_min_steps, h))


def sim_configs(params: str | Path, tasks: Sequence[str] | None = None) -> tuple[EnvConfig, ExecutionConfig, SafetyConfig]:
    """The embedded arm's env (sim_node), execution and safety (policy_node) from a ROS parameter file.

    With Meta-World ``tasks`` the execution runs at Meta-World's control step and the safety
    limits are none: the file's period and joint limits are the arm's (Meta-World clips its own
    actions); its chunk size and step limit still apply.
    """
    data = load_yaml(params)
    node = ros_parameters(data, 'policy_node')
    env = from_dict(EnvConfig, ros_parameters(data, 'sim_node').get('env', {}))
    execution = from_dict(ExecutionConfig, node.get('execution', {}))
    if tasks is not None and task_suite(tasks) == 'metaworld':
        return env, replace(execution, control_dt=suite_control_dt('metaworld')), SafetyConfig()
    return env, execution, from_dict(SafetyConfig, node.get('safety', {}))


_worker: dict = {}


def _init_worker(config: SweepConfig) -> None:
    import torch

    from policytrim_ros.envs.factory import make_env
    from policytrim_ros.policy.factory import make_policy
    torch.set_num_threads(1)  # one core per worker process
    _worker.clear()           # this process may have run an earlier sweep
    try:
        env = make_env(config.tasks, config.env, config.metaworld)
        _worker.update(config=config, env=env,
                       policy=make_policy(config.policy, config.chunk_size, config.control_dt, env.joint_names))
    except Exception as err:  # noqa: BLE001 - a Pool restarts a failing initializer forever (a hang):
        _worker['error'] = err  # the worker's first job raises it instead, in the caller


def _run(job: tuple[int, str, int]) -> tuple[EpisodeMetrics, dict]:
    from policytrim_ros.execution.episode import run_episode
    if 'error' in _worker:
        raise _worker['error']
    h, task, k = job
    cfg: SweepConfig = _worker['config']
    metrics, _ = run_episode(_worker['env'], _worker['policy'], cfg.execution(h, task), task, cfg.seed + k,
                             episode_id=f'{task}-{k:03d}', safety=cfg.safety)
    return metrics, _worker['env'].end_state()


def _episodes(config: SweepConfig, jobs: list[tuple[int, str, int]], workers: int):
    """Yield (job, (metrics, end_state)) in job order, from this process (workers 1) or a pool."""
    if workers == 1:
        _init_worker(config)
        for job in jobs:
            yield job, _run(job)
    else:
        with mp.get_context('spawn').Pool(workers, _init_worker, (config,)) as pool:
            yield from zip(jobs, pool.imap(_run, jobs, chunksize=4))


def run_sweep_end_states(config: SweepConfig, progress: bool = True
                         ) -> dict[int, list[tuple[EpisodeMetrics, dict]]]:
    """{h: (episode, its env's ``end_state()``) in (task, k) order} for every h of the sweep.

    A worker that cannot build its env or policy (e.g. a damaged checkpoint) raises its error here.
    """
    jobs = [(h, task, k) for h in config.n_action_steps for task in config.tasks for k in range(config.episodes)]
    episodes = _episodes(config, jobs, config.workers or os.cpu_count() or 1)
    results = dict([next(episodes)])   # a worker's setup error stops the sweep before the progress bar shows
    bar = tqdm(total=len(jobs), initial=1, desc='episodes', unit='ep', disable=not progress)
    for job, result in episodes:
        results[job] = result
        bar.update()
    bar.close()
    return {h: [results[(h, t, k)] for t in config.tasks for k in range(config.episodes)]
            for h in config.n_action_steps}


def run_sweep(config: SweepConfig, progress: bool = True) -> dict[int, list[EpisodeMetrics]]:
    """{h: episodes in (task, k) order} for every h of the sweep."""
    return {h: [metrics for metrics, _ in episodes]
            for h, episodes in run_sweep_end_states(config, progress).items()}


def checkpoint_sweep(checkpoint: str, params: str | Path, tasks: Sequence[str], n_action_steps: Sequence[int],
                     episodes: int, seed: int = 1000, workers: int = 0, progress: bool = True,
                     **execution) -> dict[int, list[EpisodeMetrics]]:
    """``run_sweep`` of a torch checkpoint at its own H, with the env, safety limits, control step and
    step limit of the ROS parameter file ``params`` (``sim_configs``); ``execution`` sets
    SweepConfig's horizon, replan_threshold and replan_min_steps."""
    from policytrim_ros.policy.factory import checkpoint_chunk_size
    env, base, safety = sim_configs(params, tasks)
    config = SweepConfig(policy=PolicyConfig(backend='torch', checkpoint=checkpoint), tasks=tuple(tasks),
                         n_action_steps=tuple(n_action_steps), chunk_size=checkpoint_chunk_size(checkpoint),
                         episodes=episodes, seed=seed, control_dt=base.control_dt,
                         max_episode_steps=base.max_episode_steps, workers=workers, env=env, safety=safety,
                         **execution)
    return run_sweep(config, progress)
