"""Demonstration collection without ROS: operator -> env -> rosbag2 (MCAP).

The env is the embedded arm (``ArmEnv``) or Meta-World (``MetaWorldEnv``), picked from the task
names by ``envs.factory``; the operator drives that suite's scripted expert. Each control step:
observe (with the rendered image), ask the operator for one action, send it as a single-point
trajectory (knot at ``control_dt``, like a teleop streaming JointTrajectory messages), step.
Episodes are written one bag each to ``<out>/<task>/<style>-<seed>/`` by the worker that ran them,
with the env's joint names (Meta-World: its action columns), and ``<out>/index.json`` summarises
them per style and task.

Takeover demonstrations (``Takeover``, HG-DAgger style): a learned policy drives the episode first,
exactly as the evaluation runs it, and the operator takes over after a number of control steps
drawn per seed; only the operator's part is recorded. They show the expert's recoveries from the
states the policy itself reaches (a grasp 3 cm off, a cube pushed past its line), which plain
demonstrations never visit.
"""
from __future__ import annotations

import json
import multiprocessing
import multiprocessing.util
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from policytrim_ros.data.bag import write_episode_bag
from policytrim_ros.data.episode import Episode
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.factory import make_env, task_step_limit, task_suite
from policytrim_ros.envs.metaworld_config import MetaWorldConfig
from policytrim_ros.envs.operators import Operator, TeleopConfig, make_operator
from policytrim_ros.execution.config import ExecutionConfig, SafetyConfig
from policytrim_ros.execution.episode import run_episode
from policytrim_ros.policy.factory import PolicyConfig, checkpoint_chunk_size, make_policy
from policytrim_ros.trajectory import window_trajectory

if TYPE_CHECKING:
    from policytrim_ros.envs.arm import ArmEnv
    from policytrim_ros.envs.metaworld import MetaWorldEnv
    from policytrim_ros.policy.base import ChunkPolicy

DEMO_SEED_LIMIT = 1000
"""Demonstration seeds are in [0, 1000): evaluation uses seeds from 1000 up, so they never overlap."""

# The takeover step's random stream: SeedSequence(seed, spawn_key=(_TAKEOVER_STREAM,)), disjoint
# from the envs' (spawn keys 0-5) and the teleop operator's streams.
_TAKEOVER_STREAM = 0x7A4E


@dataclass(frozen=True)
class Takeover:
    """A learned policy drives each episode until the operator takes over (HG-DAgger style).

    policy: the learned backend (torch or onnx checkpoint) that drives first.
    execution: how it drives (chunk size H, executed steps h, control period), as in evaluation.
    safety: the policy node's limits on its chunks (``SafetyConfig()`` for Meta-World).
    steps: (lo, hi) control steps the policy drives before the takeover, drawn uniformly per seed.
        An episode the policy finishes before the takeover records nothing.
    """

    policy: PolicyConfig
    execution: ExecutionConfig
    safety: SafetyConfig
    steps: tuple[int, int] = (10, 100)

    def __post_init__(self) -> None:
        if self.policy.backend not in ('torch', 'onnx'):
            raise ValueError(f"takeover needs a learned policy (backend torch or onnx), got '{self.policy.backend}'")
        lo, hi = self.steps
        if not (int(lo) == lo and int(hi) == hi and 0 <= lo <= hi):
            raise ValueError(f'takeover steps ({self.steps}) must be whole control steps with 0 <= lo <= hi')
        object.__setattr__(self, 'steps', (int(lo), int(hi)))
        # checked here, in the parent: a worker whose initializer fails is respawned by the pool forever
        horizon = checkpoint_chunk_size(self.policy.checkpoint)
        if horizon != self.execution.chunk_size:
            raise ValueError(f'the takeover checkpoint {self.policy.checkpoint} predicts H = {horizon} steps; '
                             f'execution.chunk_size is {self.execution.chunk_size}')

    def policy_steps(self, seed: int) -> int:
        """Control steps the policy drives in the episode of ``seed`` (reproducible per seed)."""
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TAKEOVER_STREAM,)))
        return int(rng.integers(self.steps[0], self.steps[1] + 1))

    def make_policy(self, joint_names: tuple[str, ...]) -> ChunkPolicy:
        return make_policy(self.policy, self.execution.chunk_size, self.execution.control_dt, joint_names)


def collect_episode(env: ArmEnv | MetaWorldEnv, operator: Operator, task: str, seed: int,
                    max_steps: int = 150, takeover: Takeover | None = None,
                    policy: ChunkPolicy | None = None) -> Episode | None:
    """Run one rendered episode of ``task`` from ``seed`` with ``operator``; stop at the first success.

    Returns the episode with T <= max_steps steps; each step is its own command (call_index = t).
    With ``takeover``, ``policy`` (``takeover.make_policy``) first drives for
    ``takeover.policy_steps(seed)`` control steps (the arm then holds where it is) and the operator
    takes over for up to ``max_steps`` more; only the operator's steps are recorded. Returns None
    when the policy succeeds before the takeover.
    """
    if max_steps < 1:
        raise ValueError(f'max_steps ({max_steps}) must be >= 1')
    if (takeover is None) != (policy is None):
        raise ValueError('pass both takeover and its policy, or neither')
    lead = takeover.policy_steps(seed) if takeover is not None else 0
    if lead:
        execution = replace(takeover.execution, max_episode_steps=lead)
        metrics, _ = run_episode(env, policy, execution, task, seed, safety=takeover.safety)
        if metrics.success:
            return None
        observation = env.observe(render=True)
    else:
        observation = env.reset(task, seed, render=True)
    operator.reset(task, seed, env.control_dt)
    images, positions, actions, times = [], [], [], []
    success = False
    limit = env.step_count + max_steps
    while env.step_count < limit:
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
                   times=np.asarray(times, dtype=np.float64), call_index=np.arange(len(actions)),
                   cameras=env.cameras)


def episode_dir(out_dir: str | Path, task: str, style: str, seed: int) -> Path:
    """Where the bag of one demonstration lives: ``<out>/<task>/<style>-<seed>``."""
    return Path(out_dir) / task / f'{style}-{seed}'


def _collect_and_write(env: ArmEnv | MetaWorldEnv, operator: Operator, out_dir: Path, only_successful: bool,
                       max_steps: int, takeover: Takeover | None, policy: ChunkPolicy | None,
                       task: str, seed: int) -> dict:
    """Collect one episode and write its bag (unless it failed and only successes are kept, or
    the policy of a takeover finished it alone)."""
    episode = collect_episode(env, operator, task, seed, task_step_limit(task, max_steps), takeover, policy)
    policy_steps = takeover.policy_steps(seed) if takeover is not None else 0
    if episode is None:
        return {'task': task, 'seed': seed, 'success': False, 'steps': 0, 'path': None,
                'policy_steps': policy_steps, 'policy_success': True}
    path = None
    if episode.success or not only_successful:
        path = write_episode_bag(episode, episode_dir(out_dir, task, operator.style, seed))
    return {'task': task, 'seed': seed, 'success': episode.success, 'steps': episode.steps,
            'path': None if path is None else str(path), 'policy_steps': policy_steps, 'policy_success': False}


# Per pool worker: (env, operator, out_dir, only_successful, max_steps, takeover, policy), built
# once by _init_worker, or the exception that stopped building it.
_WORKER: tuple | Exception | None = None


def _init_worker(tasks: Sequence[str], env_config: EnvConfig | None, metaworld_config: MetaWorldConfig | None,
                 style: str, teleop: TeleopConfig | None, out_dir: str, only_successful: bool,
                 max_steps: int, takeover: Takeover | None) -> None:
    global _WORKER
    try:
        env = make_env(tasks, env_config, metaworld_config)
        # free the GL context before the interpreter tears down (else mujoco prints EGL errors at exit)
        multiprocessing.util.Finalize(env, env.close, exitpriority=10)
        operator = make_operator(style, teleop, task_suite(tasks))
        policy = None
        if takeover is not None:
            import torch
            torch.set_num_threads(1)  # one core per worker process
            policy = takeover.make_policy(tuple(env.joint_names))
        _WORKER = (env, operator, Path(out_dir), only_successful, max_steps, takeover, policy)
    except Exception as err:  # noqa: BLE001 - a Pool restarts a failing initializer forever (a hang):
        _WORKER = err         # the worker's first job raises it instead, in the caller


def _run_job(job: tuple[str, int]) -> dict:
    if isinstance(_WORKER, Exception):
        raise _WORKER
    return _collect_and_write(*_WORKER, *job)


def collect_demonstrations(tasks: Sequence[str], episodes_per_task: int, style: str, seed: int,
                           out_dir: str | Path, workers: int = 2, only_successful: bool = True,
                           max_steps: int = 150, env_config: EnvConfig | None = None,
                           teleop: TeleopConfig | None = None, progress: bool = True,
                           metaworld_config: MetaWorldConfig | None = None,
                           takeover: Takeover | None = None) -> list[Path]:
    """Collect ``episodes_per_task`` episodes of each task with seeds seed, seed+1, ...; return bag paths.

    ``tasks`` are all embedded arm tasks (env: ``ArmEnv(env_config)``) or all Meta-World tasks
    (env: ``MetaWorldEnv(metaworld_config)``, teleop: a ``MetaWorldTeleopConfig``); see
    ``envs.factory.task_suite``. Episodes run in a pool of ``workers`` spawned processes (each with
    its own env; 1 runs them in this process). Spawned workers re-import the caller's main module,
    so scripts must call this under ``if __name__ == '__main__':``. Failed episodes are only
    written when ``only_successful`` is False. Each episode gets ``max_steps`` control steps, or its
    Meta-World task's longer ``step_limit`` (``envs.factory.task_step_limit``). With ``takeover``
    each episode starts with the policy driving (see ``collect_episode``); keep those bags in their
    own out_dir. The style's entry of ``<out>/index.json`` (other styles' entries are kept)
    records, per task, episodes run, successes, success_rate, mean_steps (over successful
    episodes) and the bags, plus the total steps and wall_clock_s; with takeover also the episodes
    the policy finished alone (policy_successes, not counted as episodes) and the mean steps the
    policy drove.
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
    args = (tuple(tasks), env_config, metaworld_config, style, teleop, str(out_dir), only_successful, max_steps,
            takeover)
    started = time.perf_counter()
    episodes = _episodes(args, jobs, workers)
    results = [next(episodes)]   # a worker's setup error (a bad takeover checkpoint) stops here, before the bar
    bar = tqdm(total=len(jobs), initial=1, desc=f'{style} demos', unit='episode', disable=not progress)
    for result in episodes:
        results.append(result)
        bar.update()
    bar.close()
    _update_index(out_dir, style, tasks, results, time.perf_counter() - started, takeover is not None)
    return sorted(Path(r['path']) for r in results if r['path'] is not None)


def _episodes(args: tuple, jobs: list[tuple[str, int]], workers: int):
    """Yield the result of each job (in job order in this process, as they finish in a pool);
    ``args`` are ``_init_worker``'s."""
    if workers == 1:
        tasks, env_config, metaworld_config, style, teleop, out_dir, only_successful, max_steps, takeover = args
        env = make_env(tasks, env_config, metaworld_config)
        try:
            operator = make_operator(style, teleop, task_suite(tasks))
            policy = takeover.make_policy(tuple(env.joint_names)) if takeover is not None else None
            for job in jobs:
                yield _collect_and_write(env, operator, Path(out_dir), only_successful, max_steps, takeover, policy,
                                         *job)
        finally:
            env.close()
    else:
        with multiprocessing.get_context('spawn').Pool(workers, _init_worker, args) as pool:
            yield from pool.imap_unordered(_run_job, jobs)
            pool.close()
            pool.join()


def _update_index(out_dir: Path, style: str, tasks: Sequence[str], results: list[dict],
                  wall_clock_s: float, takeover: bool = False) -> None:
    """Write the style's summary into ``<out>/index.json``, keeping other styles' entries."""
    path = out_dir / 'index.json'
    index = json.loads(path.read_text()) if path.exists() else {}
    summary = {}
    for task in tasks:
        runs = [r for r in results if r['task'] == task and not r['policy_success']]
        successful = [r['steps'] for r in runs if r['success']]
        summary[task] = {'episodes': len(runs), 'successes': len(successful),
                         'success_rate': len(successful) / len(runs) if runs else None,
                         'mean_steps': float(np.mean(successful)) if successful else None,
                         'bags': sorted(Path(r['path']).relative_to(out_dir).as_posix()
                                        for r in runs if r['path'] is not None)}
        if takeover:
            summary[task]['policy_successes'] = sum(r['policy_success'] for r in results if r['task'] == task)
            summary[task]['mean_policy_steps'] = float(np.mean([r['policy_steps'] for r in runs])) if runs else None
    index[style] = {'tasks': summary, 'steps': int(sum(r['steps'] for r in results)),
                    'wall_clock_s': round(wall_clock_s, 3)}
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(index, indent=2) + '\n')
