"""Record a deployed policy's episodes as rosbag2 (MCAP) bags, without ROS.

The episode runs in the same core loop as ``policytrim eval`` (``execution.episode.run_episode``:
the executor, the windows and the step counts policy_node uses); a thin env wrapper records what a
``ros2 bag record`` of the robot-side topics would hold: the cameras and joint states at the start
of every control step, and each inference call's executed window as one JointTrajectory command
(its knots are the chunk's first h targets). Failed episodes are kept: offline fine-tuning needs
them. Bags go to ``<out>/<task>/policy-<seed>/`` and ``<out>/index.json`` summarises the run.

Observing between steps changes no random stream (sensor noise is drawn per step, ``ArmEnv.observe``),
so a recorded episode runs exactly as the unrecorded one of ``policytrim eval`` on the same seed.
"""
from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from policytrim_ros.data.bag import write_episode_bag
from policytrim_ros.data.episode import Episode
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.execution.config import ExecutionConfig, SafetyConfig
from policytrim_ros.policy.factory import PolicyConfig

POLICY_STYLE = 'policy'
"""``Episode.style`` (and the bag folder prefix) of a recorded policy episode."""


class RecordingEnv:
    """An env (ArmEnv or MetaWorldEnv) that records each control step's observation and command.

    Everything not overridden is the wrapped env's. ``episode(...)`` turns what the last episode
    recorded into an ``Episode``: row t holds the image and joint state observed at the start of
    step t and the target the running trajectory commanded for it; call_index counts the
    trajectories (one per inference call).
    """

    def __init__(self, env) -> None:
        self._env = env
        self._clear()

    def __getattr__(self, name):
        return getattr(self._env, name)

    def _clear(self) -> None:
        self._rows: list[tuple] = []
        self._window: tuple[int, np.ndarray] | None = None
        self._calls = 0
        self._last = None   # (step_count, rendered observation)

    def reset(self, task: str, seed: int, render: bool = True):
        self._clear()
        return self._remember(self._env.reset(task, seed, render=render), render)

    def observe(self, render: bool = True):
        return self._remember(self._env.observe(render=render), render)

    def _remember(self, observation, render: bool):
        if render:
            self._last = (self._env.step_count, observation)
        return observation

    def set_trajectory(self, traj) -> None:
        self._env.set_trajectory(traj)
        self._window = (self._env.step_count, np.asarray(traj.positions, dtype=np.float64))
        self._calls += 1

    def step(self) -> bool:
        if self._window is None:
            raise RuntimeError('step() before any trajectory: nothing commands this step')
        if self._last is None or self._last[0] != self._env.step_count:
            self.observe(render=True)   # the camera frame of this step, as a recorder would see it
        observation = self._last[1]
        start, targets = self._window
        offset = self._env.step_count - start
        if offset >= len(targets):
            raise RuntimeError(f'step {self._env.step_count} is past the {len(targets)} knots of the running window')
        self._rows.append((observation.image, observation.joint_positions, targets[offset], observation.time,
                           self._calls - 1))
        return self._env.step()

    def episode(self, task: str, seed: int, success: bool) -> Episode:
        """The recorded episode (style ``policy``)."""
        if not self._rows:
            raise ValueError(f'{task} seed {seed}: no step was recorded')
        images, positions, actions, times, calls = zip(*self._rows)
        return Episode(task=task, instruction=self._env.instruction, seed=seed, style=POLICY_STYLE, success=success,
                       control_dt=self._env.control_dt, joint_names=tuple(self._env.joint_names),
                       images=np.stack(images), joint_positions=np.stack(positions), actions=np.stack(actions),
                       times=np.asarray(times, dtype=np.float64), call_index=np.asarray(calls, dtype=np.int64),
                       cameras=tuple(self._env.cameras))


def record_episode(env: RecordingEnv, policy, execution: ExecutionConfig, safety: SafetyConfig, task: str,
                   seed: int) -> tuple[Episode, dict]:
    """Run one episode of ``policy`` with ``env`` recording; return it and its metrics (as a dict)."""
    from policytrim_ros.execution.episode import run_episode
    metrics, _ = run_episode(env, policy, execution, task, seed, safety=safety)
    return env.episode(task, seed, metrics.success), {
        'task': task, 'seed': seed, 'success': bool(metrics.success), 'steps': int(metrics.steps),
        'inference_calls': int(metrics.inference_calls)}


_WORKER: dict = {}


def _init_worker(policy: PolicyConfig, execution: ExecutionConfig, safety: SafetyConfig,
                 env_config: EnvConfig | None, tasks: tuple[str, ...], out: str) -> None:
    import torch

    from policytrim_ros.envs.factory import make_env
    from policytrim_ros.policy.factory import make_policy
    torch.set_num_threads(1)   # one core per worker process
    env = make_env(tasks, env_config)
    _WORKER.update(env=RecordingEnv(env), execution=execution, safety=safety, out=Path(out),
                   policy=make_policy(policy, execution.chunk_size, execution.control_dt, tuple(env.joint_names)))


def _run_job(job: tuple[str, int]) -> dict:
    w = _WORKER
    episode, row = record_episode(w['env'], w['policy'], w['execution'], w['safety'], *job)
    path = w['out'] / job[0] / f'{POLICY_STYLE}-{job[1]}'
    write_episode_bag(episode, path)
    return {**row, 'path': path.relative_to(w['out']).as_posix()}


def record_policy_episodes(policy: PolicyConfig, execution: ExecutionConfig, safety: SafetyConfig,
                           tasks: Sequence[str], episodes_per_task: int, seed: int, out: str | Path,
                           env_config: EnvConfig | None = None, workers: int = 1, progress: bool = True) -> list[dict]:
    """Record ``episodes_per_task`` episodes of each task (seeds seed, seed+1, ...) at the
    execution's h; return one row per episode (task, seed, success, steps, inference_calls, path)
    and write them, with the run's settings, to ``<out>/index.json``."""
    if episodes_per_task < 1 or workers < 1:
        raise ValueError(f'episodes_per_task ({episodes_per_task}) and workers ({workers}) must be >= 1')
    out = Path(out)
    jobs = [(task, s) for s in range(seed, seed + episodes_per_task) for task in tasks]
    existing = [out / t / f'{POLICY_STYLE}-{s}' for t, s in jobs if (out / t / f'{POLICY_STYLE}-{s}').exists()]
    if existing:
        raise FileExistsError(f'{len(existing)} bags already exist (first: {existing[0]}); record into another out')
    args = (policy, execution, safety, env_config, tuple(tasks), str(out))
    started = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=f'record h={execution.n_action_steps}', unit='episode', disable=not progress)
    rows = []
    if workers == 1:
        _init_worker(*args)
        try:
            for job in jobs:
                rows.append(_run_job(job))
                bar.update()
        finally:
            _WORKER['env'].close()
            _WORKER.clear()
    else:
        with multiprocessing.get_context('spawn').Pool(workers, _init_worker, args) as pool:
            for row in pool.imap_unordered(_run_job, jobs):
                rows.append(row)
                bar.update()
    bar.close()
    rows.sort(key=lambda r: (r['task'], r['seed']))
    index = {'checkpoint': policy.checkpoint, 'backend': policy.backend, 'n_action_steps': execution.n_action_steps,
             'chunk_size': execution.chunk_size, 'seed': seed, 'wall_clock_s': round(time.perf_counter() - started, 1),
             'success_rate': {t: float(np.mean([r['success'] for r in rows if r['task'] == t])) for t in tasks},
             'episodes': rows}
    (out / 'index.json').write_text(json.dumps(index, indent=2) + '\n')
    return rows
