"""Demonstration collection without ROS: operator -> env -> rosbag2 (MCAP).

The env is the embedded arm (``ArmEnv``) or Meta-World (``MetaWorldEnv``), picked from the task
names by ``envs.factory``; the operator drives that suite's scripted expert. Each control step:
observe (with the rendered image), ask the operator for one action, send it as a single-point
trajectory (knot at ``control_dt``, like a teleop streaming JointTrajectory messages), step.
Episodes are written one bag each to ``<out>/<task>/<style>-<seed>/`` by the worker that ran them,
with the env's joint names (Meta-World: its action columns), and ``<out>/index.json`` summarises
them per style and task.
"""
from __future__ import annotations

import json
import multiprocessing
import multiprocessing.util
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from policytrim_ros.data.bag import write_episode_bag
from policytrim_ros.data.episode import Episode
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.factory import make_env, task_suite
from policytrim_ros.envs.metaworld_config import MetaWorldConfig
from policytrim_ros.envs.operators import Operator, TeleopConfig, make_operator
from policytrim_ros.execution.trajectory import window_trajectory

if TYPE_CHECKING:
    from policytrim_ros.envs.arm import ArmEnv
    from policytrim_ros.envs.metaworld import MetaWorldEnv

DEMO_SEED_LIMIT = 1000
"""Demonstration seeds are in [0, 1000): evaluation uses seeds from 1000 up, so they never overlap."""


def collect_episode(env: ArmEnv | MetaWorldEnv, operator: Operator, task: str, seed: int,
                    max_steps: int = 150) -> Episode:
    """Run one rendered episode of ``task`` from ``seed`` with ``operator``; stop at the first success.

    Returns the episode with T <= max_steps steps; each step is its own command (call_index = t).
    """
    if max_steps < 1:
        raise ValueError(f'max_steps ({max_steps}) must be >= 1')
    observation = env.reset(task, seed, render=True)
    operator.reset(task, seed, env.control_dt)
    images, positions, actions, times = [], [], [], []
    success = False
    while env.step_count < max_steps:
        action = np.asarray(operator.act(observation), dtype=np.float64)
        images.append(observation.image)
        positions.append(observation.joint_positions)
        actions.append(action)
        times.append(observation.time)
        env.set_trajectory(window_trajectory(action[None], 1, env.control_dt, env.joint_names))
        if env.step():
            success = True
            break
        observation = env.observe(render=True)
    if not success:
        env.hold()
    return Episode(task=task, instruction=env.instruction, seed=seed, style=operator.style, success=success,
                   control_dt=env.control_dt, joint_names=tuple(env.joint_names), images=np.stack(images),
                   joint_positions=np.stack(positions), actions=np.stack(actions),
                   times=np.asarray(times, dtype=np.float64), call_index=np.arange(len(actions)))


def episode_dir(out_dir: str | Path, task: str, style: str, seed: int) -> Path:
    """Where the bag of one demonstration lives: ``<out>/<task>/<style>-<seed>``."""
    return Path(out_dir) / task / f'{style}-{seed}'


def _collect_and_write(env: ArmEnv | MetaWorldEnv, operator: Operator, out_dir: Path, only_successful: bool,
                       max_steps: int, task: str, seed: int) -> dict:
    """Collect one episode and write its bag (unless it failed and only successes are kept)."""
    episode = collect_episode(env, operator, task, seed, max_steps)
    path = None
    if episode.success or not only_successful:
        path = write_episode_bag(episode, episode_dir(out_dir, task, operator.style, seed))
    return {'task': task, 'seed': seed, 'success': episode.success, 'steps': episode.steps,
            'path': None if path is None else str(path)}


# Per pool worker: (env, operator, out_dir, only_successful, max_steps), built once by _init_worker.
_WORKER: tuple | None = None


def _init_worker(tasks: Sequence[str], env_config: EnvConfig | None, metaworld_config: MetaWorldConfig | None,
                 style: str, teleop: TeleopConfig | None, out_dir: str, only_successful: bool,
                 max_steps: int) -> None:
    global _WORKER
    env = make_env(tasks, env_config, metaworld_config)
    # free the GL context before the interpreter tears down (else mujoco prints EGL errors at exit)
    multiprocessing.util.Finalize(env, env.close, exitpriority=10)
    operator = make_operator(style, teleop, task_suite(tasks))
    _WORKER = (env, operator, Path(out_dir), only_successful, max_steps)


def _run_job(job: tuple[str, int]) -> dict:
    return _collect_and_write(*_WORKER, *job)


def collect_demonstrations(tasks: Sequence[str], episodes_per_task: int, style: str, seed: int,
                           out_dir: str | Path, workers: int = 2, only_successful: bool = True,
                           max_steps: int = 150, env_config: EnvConfig | None = None,
                           teleop: TeleopConfig | None = None, progress: bool = True,
                           metaworld_config: MetaWorldConfig | None = None) -> list[Path]:
    """Collect ``episodes_per_task`` episodes of each task with seeds seed, seed+1, ...; return bag paths.

    ``tasks`` are all embedded arm tasks (env: ``ArmEnv(env_config)``) or all Meta-World tasks
    (env: ``MetaWorldEnv(metaworld_config)``, teleop: a ``MetaWorldTeleopConfig``); see
    ``envs.factory.task_suite``. Episodes run in a pool of ``workers`` spawned processes (each with
    its own env; 1 runs them in this process). Spawned workers re-import the caller's main module,
    so scripts must call this under ``if __name__ == '__main__':``. Failed episodes are only
    written when ``only_successful`` is False. The style's entry of ``<out>/index.json`` (other
    styles' entries are kept) records, per task, episodes run, successes, success_rate, mean_steps
    (over successful episodes) and the bags, plus the total steps and wall_clock_s.
    """
    suite = task_suite(tasks)  # fail fast on unknown or mixed tasks
    make_operator(style, teleop, suite)  # ... and on an unknown style or the wrong teleop config
    if episodes_per_task < 1 or workers < 1:
        raise ValueError(f'episodes_per_task ({episodes_per_task}) and workers ({workers}) must be >= 1')
    if not 0 <= seed <= seed + episodes_per_task <= DEMO_SEED_LIMIT:
        raise ValueError(f'demonstration seeds {seed}..{seed + episodes_per_task - 1} must lie in '
                         f'[0, {DEMO_SEED_LIMIT}): evaluation uses seeds from {DEMO_SEED_LIMIT} up')
    out_dir = Path(out_dir)
    jobs = [(task, s) for s in range(seed, seed + episodes_per_task) for task in tasks]
    existing = [p for p in (episode_dir(out_dir, t, style, s) for t, s in jobs) if p.exists()]
    if existing:
        raise FileExistsError(f'{len(existing)} bags already exist (first: {existing[0]}); '
                              'remove them or collect into another out_dir')
    args = (tuple(tasks), env_config, metaworld_config, style, teleop, str(out_dir), only_successful, max_steps)
    started = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=f'{style} demos', unit='episode', disable=not progress)
    results = []
    if workers == 1:
        env, operator = make_env(tasks, env_config, metaworld_config), make_operator(style, teleop, suite)
        try:
            for job in jobs:
                results.append(_collect_and_write(env, operator, out_dir, only_successful, max_steps, *job))
                bar.update()
        finally:
            env.close()
    else:
        with multiprocessing.get_context('spawn').Pool(workers, _init_worker, args) as pool:
            for result in pool.imap_unordered(_run_job, jobs):
                results.append(result)
                bar.update()
            pool.close()
            pool.join()
    bar.close()
    _update_index(out_dir, style, tasks, results, time.perf_counter() - started)
    return sorted(Path(r['path']) for r in results if r['path'] is not None)


def _update_index(out_dir: Path, style: str, tasks: Sequence[str], results: list[dict],
                  wall_clock_s: float) -> None:
    """Write the style's summary into ``<out>/index.json``, keeping other styles' entries."""
    path = out_dir / 'index.json'
    index = json.loads(path.read_text()) if path.exists() else {}
    summary = {}
    for task in tasks:
        runs = [r for r in results if r['task'] == task]
        successful = [r['steps'] for r in runs if r['success']]
        summary[task] = {'episodes': len(runs), 'successes': len(successful),
                         'success_rate': len(successful) / len(runs),
                         'mean_steps': float(np.mean(successful)) if successful else None,
                         'bags': sorted(Path(r['path']).relative_to(out_dir).as_posix()
                                        for r in runs if r['path'] is not None)}
    index[style] = {'tasks': summary, 'steps': int(sum(r['steps'] for r in results)),
                    'wall_clock_s': round(wall_clock_s, 3)}
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(index, indent=2) + '\n')
