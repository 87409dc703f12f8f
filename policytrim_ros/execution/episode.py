"""The closed loop without ROS: the same executor and trajectory the policy node uses, driven
directly against an ``ArmEnv`` (or a ``MetaWorldEnv``, which has the same surface) at full speed
(evaluation sweeps, data collection, RL rollouts).

On the same seed this loop and the ROS path (sim_node in lockstep + policy_node) execute the same
trajectories and count the same steps and inference calls.
"""
from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from policytrim_ros import constants as C
from policytrim_ros.config import ConfigError
from policytrim_ros.envs.base import camera_tiles, select_tiles
from policytrim_ros.execution.config import ExecutionConfig, SafetyConfig
from policytrim_ros.execution.executor import ChunkExecutor, ChunkRecord
from policytrim_ros.execution.metrics import EpisodeMetrics
from policytrim_ros.execution.safety import UnsafeChunkError
from policytrim_ros.execution.stitching import LEAD_MARGIN_STEPS, TIME_EPS, StaleChunkError
from policytrim_ros.policy.base import ChunkPolicy, InferenceError, Observation, PolicyInputError, PolicyMetadata

if TYPE_CHECKING:
    from policytrim_ros.envs.arm import ArmEnv
    from policytrim_ros.envs.metaworld import MetaWorldEnv


def require_horizon_head(metadata: PolicyMetadata, horizon: str) -> None:
    """ConfigError when ``horizon`` is learned and the policy has no efficiency head."""
    if horizon == 'learned' and not metadata.horizons:
        raise ConfigError(f'execution.horizon learned runs the h an efficiency head picks, and the {metadata.name} '
                          'policy has none (a checkpoint from policytrim train-horizon has one)')


def predict(policy: ChunkPolicy, observation: Observation, horizon: str) -> tuple[np.ndarray, int | None]:
    """One inference call: ((H, A) chunk, h), h the efficiency head's with ``horizon`` learned
    (``HorizonPolicy.predict_chunk_and_horizon``), else None (the executor's fixed h)."""
    if horizon == 'learned':
        return policy.predict_chunk_and_horizon(observation)
    return policy.predict_action_chunk(observation), None


def run_episode(env: ArmEnv | MetaWorldEnv, policy: ChunkPolicy, config: ExecutionConfig, task: str, seed: int,
                episode_id: str = '', safety: SafetyConfig | None = None, window_end: str = 'moving',
                latency_steps: int = 0) -> tuple[EpisodeMetrics, list[ChunkRecord]]:
    """Run one episode of ``task`` from ``seed``; return its metrics and one record per call.

    Each call executes the chunk's first h actions as one trajectory, stepping the env once per
    action until success (the episode ends at the first successful step) or the step limit. A
    chunk the executor rejects, or an observation the policy cannot use, ends the episode with
    end_reason 'error' and the arm holding; a failed inference call (``InferenceError``: a policy
    server gone, timed out or in error) ends it with that error's end_reason. The policy sees the env's cameras it was trained on, in
    its order (an env may render more; a policy that does not name its cameras sees the first ones,
    as policy_node's default topics give it); one the env does not render raises ConfigError: that
    is a setup mistake, not an episode that failed. ``window_end`` is how each window ends
    ('moving' or 'rest', as policy_node sends them to a controller that needs it). With
    ``config.horizon`` divergence a window is cut once the measured joints leave its targets
    (``ChunkExecutor.diverged``) and the policy is called again at once; with learned, each window
    runs the h the policy's efficiency head picks (``HorizonPolicy``).

    With ``config.async_inference`` the loop is policy_node's async schedule with a model that takes
    ``latency_steps`` control steps per call (deterministic, unlike wall-clock latency): each call after
    the first starts from the observation ``latency_steps + LEAD_MARGIN_STEPS`` steps before the running
    window ends (as the node starts it), its chunk is sent when the call is done (at the latest one step
    before that end) and takes over there (``ChunkExecutor.dispatch_async``). A call that takes longer
    than a window leaves the arm holding at the window's end for the rest of it; those held steps are
    simulated but not counted (no action ran).
    """
    if latency_steps < 0 or (latency_steps and not config.async_inference):
        raise ValueError(f'latency_steps ({latency_steps}) must be >= 0, and is simulated with async_inference only')
    if config.async_inference:
        seen, render, executor, _ = _setup(env, policy.metadata, config, safety, window_end)
        policy.reset()
        observation = env.reset(task, seed, render=render)
        executor.start(episode_id or f'{task}-{seed}', task, env.instruction, time.perf_counter())
        return _run_async(env, policy, config, executor, observation, seen, render, latency_steps)
    episode = play_episode(env, policy.metadata, config, task, seed, episode_id, safety, window_end)
    policy.reset()
    observation = next(episode)
    while True:
        try:
            answer = predict(policy, observation, config.horizon)
        except (PolicyInputError, InferenceError) as err:   # the episode ends with its end_reason
            answer = err
        try:
            observation = episode.throw(answer) if isinstance(answer, Exception) else episode.send(answer)
        except StopIteration as end:
            return end.value


def play_episode(env: ArmEnv | MetaWorldEnv, metadata: PolicyMetadata, config: ExecutionConfig, task: str,
                 seed: int, episode_id: str = '', safety: SafetyConfig | None = None, window_end: str = 'moving'
                 ) -> Generator[Observation, tuple[np.ndarray, int | None], tuple[EpisodeMetrics, list[ChunkRecord]]]:
    """``run_episode`` as a generator that leaves the inference calls to its driver, so one driver can
    step several episodes in lockstep and answer their calls in one batch (``training.lockstep``).

    It yields each observation the policy must answer (already cut to the policy's cameras, as
    ``metadata`` names them) and is sent back what ``predict`` returns: the (H, A) chunk and h (None:
    the executor's fixed h); a driver whose policy could not use the observation throws the
    PolicyInputError in instead, which ends the episode as in ``run_episode``. It returns
    (metrics, records). An inference call's latency is the time from the yield to the answer
    (a batch's wait for its other episodes included). Sync episodes only: ``run_episode`` simulates
    async inference.
    """
    if config.async_inference:
        raise ValueError('play_episode runs sync episodes; run_episode simulates async_inference')
    seen, render, executor, divergence = _setup(env, metadata, config, safety, window_end)
    observation = env.reset(task, seed, render=render)
    executor.start(episode_id or f'{task}-{seed}', task, env.instruction, time.perf_counter())
    records: list[ChunkRecord] = []
    while True:
        started = time.perf_counter()
        try:
            chunk, h = yield seen(observation)
            traj, record = executor.dispatch(chunk, env.time, observation.joint_positions,
                                             time.perf_counter() - started, h)
        except (PolicyInputError, UnsafeChunkError):
            env.hold()
            return executor.finish(False, C.END_ERROR, time.perf_counter()), records
        except InferenceError as err:   # a policy server gone, timed out or in error
            env.hold()
            return executor.finish(False, err.end_reason, time.perf_counter()), records
        records.append(record)
        env.set_trajectory(traj)
        for executed in range(1, record.n_action_steps + 1):
            if env.step():
                executor.complete_window(executed)
                return executor.finish(True, C.END_SUCCESS, time.perf_counter()), records
            if divergence and executor.diverged(executed, env.observe(render=False).joint_positions):
                break   # the arm left the plan: replan now (the next window replaces this one)
        executor.complete_window(executed)
        if executor.out_of_steps:
            env.hold()
            return executor.finish(False, C.END_MAX_STEPS, time.perf_counter()), records
        observation = env.observe(render=render)


def _setup(env, meta: PolicyMetadata, config: ExecutionConfig, safety: SafetyConfig | None, window_end: str):
    """(seen, render, executor, divergence) of an episode of ``meta``'s policy on ``env``: what the
    policy sees of an observation (its cameras' tiles), whether to render, and the executor."""
    render = meta.image_size is not None
    cameras = tuple(env.cameras)
    tiles = tuple(range(min(meta.num_cameras, len(cameras)) if render and not meta.cameras else len(cameras)))
    if render and meta.cameras:
        try:
            tiles = camera_tiles(cameras, meta.cameras)
        except ValueError as err:
            raise ConfigError(f'the {meta.name} policy was trained on the cameras {list(meta.cameras)}: {err} '
                              '(env.cameras in the params file)') from None

    def seen(obs: Observation) -> Observation:
        """What the policy sees: its cameras' tiles of the observation's image."""
        if tiles == tuple(range(len(cameras))):
            return obs
        return replace(obs, image=select_tiles(obs.image, len(cameras), tiles))

    require_horizon_head(meta, config.horizon)
    executor = ChunkExecutor(config, env.joint_names, safety, window_end)
    divergence = config.horizon == 'divergence'
    if divergence and not env.joint_targets:
        raise ConfigError(f'horizon divergence compares joint targets with measured joints; '
                          f'{type(env).__name__} actions are not joint targets')
    return seen, render, executor, divergence


def _run_async(env, policy: ChunkPolicy, config: ExecutionConfig, executor: ChunkExecutor, observation: Observation,
               seen, render: bool, latency_steps: int) -> tuple[EpisodeMetrics, list[ChunkRecord]]:
    """run_episode with async_inference (see there), timed in env seconds like policy_node in its clock."""
    records: list[ChunkRecord] = []
    dt, eps = config.control_dt, TIME_EPS
    latency = latency_steps * dt

    def call(obs: Observation, step: int):
        started = time.perf_counter()
        chunk, h = predict(policy, seen(obs), config.horizon)
        return chunk, h, time.perf_counter() - started, step, obs.joint_positions

    def send(result) -> None:
        chunk, h, seconds, step, positions = result
        traj, record = executor.dispatch_async(chunk, step, env.time, positions, seconds, h)
        records.append(record)
        env.set_trajectory(traj)

    def end(success: bool, end_reason: str):
        if not success:
            env.hold()
        metrics = executor.finish(success, end_reason, time.perf_counter())
        return metrics, records[:metrics.inference_calls]   # a chunk sent for after the end is no call

    try:
        send(call(observation, 0))   # the first window: nothing runs yet, the arm waits for it
        pending = None               # (the finished call, env time its chunk is back)
        while True:
            w, now = executor.window, env.time
            last = executor.steps + w.n_steps >= config.max_episode_steps   # no call after this window
            lead = latency + LEAD_MARGIN_STEPS * dt
            if pending is None and not last and w.start_time - eps <= now >= w.end_time - lead - eps:
                observation = env.observe(render=render)
                pending = (call(observation, executor.steps + executor.steps_at(now)), now + latency)
                continue
            if pending is not None and now >= max(pending[1], w.end_time - dt) - eps:
                try:
                    send(pending[0])
                    pending = None
                except StaleChunkError:   # a call longer than its whole chunk: plan again where the arm holds
                    pending = (call(env.observe(render=render), executor.steps + w.n_steps), now + latency)
                continue
            if last and now >= w.end_time - eps:
                executor.complete_window()
                return end(False, C.END_MAX_STEPS)
            if env.step():   # steps past a window's end (a late chunk) hold the arm and are not counted
                executor.end_window_at(env.time)
                return end(True, C.END_SUCCESS)
    except (PolicyInputError, UnsafeChunkError):
        return end(False, C.END_ERROR)
    except InferenceError as err:
        return end(False, err.end_reason)
