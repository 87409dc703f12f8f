"""PolicyTrim post-training of a VLA checkpoint: Stage 1 (reliable chunk extension) or Stage 2
(redundancy-aware step reduction), critic-free GRPO on the embedded arm or Meta-World (DESIGN.md
section 2).

Each iteration rolls out ``groups_per_iteration`` groups of G episodes in parallel workers, scores
each trajectory, and runs one GRPO update. Initial states, exploration noise and minibatch order
are functions of (seed, iteration), so a run resumed from its last checkpoint continues exactly.
"""
from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from policytrim_ros import constants as C
from policytrim_ros import resources
from policytrim_ros.config import to_dict
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.factory import suite_control_dt, suite_joint_names, task_suite
from policytrim_ros.envs.metaworld_config import MetaWorldConfig
from policytrim_ros.execution.config import SafetyConfig
from policytrim_ros.policy.checkpoint import (load_checkpoint, load_trainer_state, save_checkpoint, save_json,
                                              save_trainer_state)
from policytrim_ros.training.exploration import ChunkNoise, ExplorationConfig
from policytrim_ros.training.grpo import GRPOConfig, grpo_update
from policytrim_ros.training.rewards import (ExtensionRewardConfig, StepRewardConfig, extension_rewards,
                                             step_rewards)
from policytrim_ros.training.runstate import open_scalars, recover, save_atomically
from policytrim_ros.training.stages import SelectionConfig, acceptance_horizons, acceptance_ratios, group_jobs
from policytrim_ros.training.engines import open_rollouts
from policytrim_ros.training.workers import RolloutSetup, RolloutsConfig

RL_SEED_OFFSET = 100_000
"""Initial-state seeds of RL rollouts start here: demonstrations use 0-999, evaluation 1000 on."""


@dataclass(frozen=True)
class PolicyTrimConfig:
    """One stage of PolicyTrim post-training.

    init: checkpoint the stage starts from (a directory or package:// URI): the BC baseline for
        Stage 1, the Stage 1 result for Stage 2. It is also the frozen KL reference.
    stage: 1 (h cycled over Gamma, reward success * (1 + beta * gamma)) or 2 (h fixed, reward with
        the step-saving term and the stability penalty).
    tasks: tasks of one suite (the embedded arm's or Meta-World's); groups cycle through them.
    iterations: GRPO iterations (rollout + update).
    groups_per_iteration: groups per iteration, each one task and initial state.
    group_size: G, rollouts per group (paper 8).
    base_n_action_steps: the model's original h, Gamma's first value (Stage 1).
    acceptance_ratio_count: M, the number of values in Gamma (paper 3).
    n_action_steps: Stage 2's fixed h (from the between-stage sweep; required for stage 2 unless
        ``task_n_action_steps`` names every task).
    task_n_action_steps: Stage 2's h per task, {task: h}, over ``n_action_steps`` for the tasks it
        names (from the sweep with ``selection.per_task``).
    step_budget: Stage 2's S_base per task, {task: steps}, alpha * mean successful steps of the
        task at that h (required for every task).
    extension: Stage 1 reward settings. steps: Stage 2 reward settings. grpo: the update.
    selection: the between-stage sweep of ``--stage all`` (``training.pipeline``).
    lr: AdamW learning rate (paper 5e-6). Measured on the shipped baseline (3 groups of 8 per
        iteration, log_std -2): 5e-5 clipped 77 % of the windows in the first iteration (approx_kl
        2.6); 5e-6 clipped 25 % falling to 10 % (approx_kl 0.01-0.02).
    weight_decay: AdamW weight decay.
    log_std: exploration log-std (normalized delta units) set on every action dimension at the
        start; None keeps the checkpoint's.
    exploration: how that noise is spread along a chunk: iid per step (default, the paper), with
        a share ``correlation`` drawn once per chunk and joint, or on ``waypoints`` per chunk
        interpolated between them (``training.exploration``).
    max_episode_steps: step limit per rollout.
    workers: rollout processes (0 = in this process) of the local engine.
    envs_per_worker: envs each rollout worker (a process, or a Ray actor) steps in lockstep, their
        inference calls batched (``training.lockstep``): the same rollouts with any number, ~1.1x less
        CPU a rollout at 4 (docs/experiments.md, section 5).
    rollouts: where rollouts run: this machine's processes (engine 'local', the default) or a Ray
        cluster (engine 'ray', docs/scale-out.md).
    seed: seed of initial states (RL_SEED_OFFSET + ...), exploration noise and minibatch order.
    checkpoint_every: iterations between checkpoints (also where a resumed run continues).
    out_dir: run folder: checkpoints/, last/, scalars.csv, config.json.
    """

    init: str = 'package://policytrim_ros/models/bc-wrist-more-ft'   # config/training/policytrim.yaml's
    stage: int = 1
    tasks: tuple[str, ...] = ('reach', 'push', 'pick_place')
    iterations: int = 100
    groups_per_iteration: int = 8
    group_size: int = 8
    base_n_action_steps: int = 4
    acceptance_ratio_count: int = 3
    n_action_steps: int = 0
    task_n_action_steps: dict[str, int] = field(default_factory=dict)
    step_budget: dict[str, float] = field(default_factory=dict)
    extension: ExtensionRewardConfig = field(default_factory=ExtensionRewardConfig)
    steps: StepRewardConfig = field(default_factory=StepRewardConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    lr: float = 5e-6
    weight_decay: float = 0.0
    log_std: float | None = None
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    max_episode_steps: int = 150
    workers: int = 2
    envs_per_worker: int = 4
    rollouts: RolloutsConfig = field(default_factory=RolloutsConfig)
    seed: int = 0
    checkpoint_every: int = 10
    out_dir: str = 'runs/policytrim'

    def __post_init__(self):
        if self.stage not in (1, 2):
            raise ValueError(f'stage ({self.stage}) must be 1 or 2')
        for name in ('iterations', 'groups_per_iteration', 'group_size', 'checkpoint_every', 'max_episode_steps',
                     'envs_per_worker'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} ({getattr(self, name)}) must be >= 1')
        if self.group_size < 2:
            raise ValueError(f'group_size ({self.group_size}) must be >= 2: advantages compare members')
        for task, h in self.task_n_action_steps.items():
            if task not in self.tasks or type(h) is not int or h < 1:
                raise ValueError(f'task_n_action_steps[{task!r}] ({h!r}) must be an h >= 1 of one of the tasks '
                                 f'{list(self.tasks)}')
        if self.stage == 2:
            budgets = self.step_budget if isinstance(self.step_budget, dict) else {}
            valid = all(isinstance(budgets.get(t), (int, float)) and budgets[t] > 0 for t in self.tasks)
            if min(self.task_horizon(t) for t in self.tasks) < 1 or not valid:
                raise ValueError(f'stage 2 needs n_action_steps ({self.n_action_steps}) >= 1 (or task_n_action_steps '
                                 f'for every task, got {self.task_n_action_steps}) and a step_budget > 0 '
                                 f'for every task {list(self.tasks)} (got {self.step_budget}): `--stage all` '
                                 'derives them from the between-stage sweep (the largest h within tolerance, '
                                 '1.3 x the mean successful steps per task at that h)')
        if not self.lr > 0:
            raise ValueError(f'lr ({self.lr}) must be > 0')
        task_suite(self.tasks)   # unknown tasks, or tasks of both suites, fail here

    def task_horizon(self, task: str) -> int:
        """Stage 2's h on ``task``."""
        return self.task_n_action_steps.get(task, self.n_action_steps)


def stage_horizons(cfg: PolicyTrimConfig, chunk_size: int) -> dict[str, tuple[int, ...]]:
    """{task: the h of each group member's rollouts}: Gamma's (Stage 1) or the task's fixed h (Stage 2)."""
    if cfg.stage == 2:
        return {task: (cfg.task_horizon(task),) for task in cfg.tasks}
    gamma = acceptance_horizons(acceptance_ratios(cfg.base_n_action_steps, chunk_size, cfg.acceptance_ratio_count),
                                chunk_size)
    return {task: gamma for task in cfg.tasks}


def iteration_jobs(cfg: PolicyTrimConfig, iteration: int, horizons: Mapping[str, tuple[int, ...]]) -> list:
    """The rollout jobs of one iteration: ``groups_per_iteration`` groups of G, tasks cycled, initial
    states and noise seeds functions of (seed, iteration), each task's group at ``horizons[task]``."""
    jobs = []
    for g in range(cfg.groups_per_iteration):
        index = iteration * cfg.groups_per_iteration + g
        task = cfg.tasks[index % len(cfg.tasks)]
        initial = RL_SEED_OFFSET + cfg.seed * 10_000_000 + index
        jobs += group_jobs(task, initial, horizons[task], cfg.group_size, noise_seed=initial * cfg.group_size)
    return jobs


def trajectory_rewards(cfg: PolicyTrimConfig, rollouts: list, chunk_size: int) -> np.ndarray:
    """(G,) the stage's reward of each rollout of one group."""
    success = [r.metrics.success for r in rollouts]
    if cfg.stage == 1:
        return extension_rewards(success, [r.metrics.n_action_steps / chunk_size for r in rollouts], cfg.extension)
    return step_rewards(success, [r.metrics.steps for r in rollouts], cfg.step_budget[rollouts[0].metrics.task], cfg.steps)


def _save(out: Path, model, optimizer, iteration: int, cfg: PolicyTrimConfig, scalars: dict) -> None:
    """checkpoints/iter_<n> and last/ (with the optimizer state), as one atomic save."""
    metadata = {'policytrim_stage': cfg.stage, 'iteration': iteration, 'policytrim_config': to_dict(cfg), **scalars}

    def last(directory: Path) -> None:
        save_checkpoint(directory, model, model.config, metadata)
        save_trainer_state(directory, optimizer, {'iteration': iteration})

    save_atomically(out, {f'checkpoints/iter_{iteration:05d}': lambda d: save_checkpoint(d, model, model.config,
                                                                                         metadata),
                          'last': last})


def train_policytrim(cfg: PolicyTrimConfig, env: EnvConfig | None = None, safety: SafetyConfig | None = None,
                     resume: bool = False, progress: bool = True, metaworld: MetaWorldConfig | None = None,
                     rollouts=None) -> Path:
    """Run the stage; return the folder of the final checkpoint (``<out_dir>/last``).

    ``env`` configures the embedded arm, ``metaworld`` Meta-World (whichever the tasks need; None =
    defaults); ``safety`` checks every chunk (None = no limits, what Meta-World's own clipping needs).
    rollouts: where the episodes run: None = the pool ``cfg.rollouts`` asks for (a ``RolloutPool``
    of ``cfg.workers`` processes with their own envs, or a ``RayRolloutPool``); or a function of the
    ``RolloutSetup`` returning a context manager with RolloutPool's ``collect(weights, jobs)``
    (trainer_node's episodes through policy_node), which then wins over ``cfg.rollouts``.
    """
    out = Path(cfg.out_dir)
    recover(out)   # a save a kill interrupted: finished if it was complete, else the previous state stays
    if (out / 'last').exists() and not resume:
        raise FileExistsError(f'{out} already holds a run; pass resume=True (--resume) or pick another out_dir')
    torch.set_num_threads(1)
    resuming = resume and (out / 'last').exists()
    init = resources.resolve(cfg.init)
    reference = load_checkpoint(init)[0] if cfg.grpo.kl_coef else None   # the frozen KL anchor
    model, model_cfg, _ = load_checkpoint(out / 'last' if resuming else init)
    if tuple(model_cfg.joint_names) != suite_joint_names(task_suite(cfg.tasks)):
        raise ValueError(f'{cfg.init} commands {list(model_cfg.joint_names)}, not the joints of the env of tasks '
                         f'{list(cfg.tasks)}: post-train a checkpoint on tasks of the robot it was trained for')
    if cfg.log_std is not None:
        with torch.no_grad():
            if not resuming:
                model.log_std_param.fill_(cfg.log_std)
            if reference is not None:   # the anchor is the init policy as it samples, at the same std
                reference.log_std_param.fill_(cfg.log_std)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = load_trainer_state(out / 'last', optimizer)[0]['iteration'] if resuming else 0
    if start >= cfg.iterations:
        return out / 'last'   # resumed a finished run: nothing left to do
    if start == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_json(out / 'config.json', to_dict(cfg))
    horizons = stage_horizons(cfg, model_cfg.chunk_size)
    env = env or EnvConfig()
    setup = RolloutSetup(model_cfg, env, safety or SafetyConfig(), cfg.max_episode_steps,
                         suite_control_dt(task_suite(cfg.tasks), env), tuple(cfg.tasks),
                         metaworld or MetaWorldConfig(), cfg.exploration, envs_per_worker=cfg.envs_per_worker)
    noise = ChunkNoise(cfg.exploration)
    log, writer = open_scalars(out / 'scalars.csv', ['iteration', 'metric', 'value', 'wall_clock_s'], start)
    started = time.monotonic()
    bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations, desc=f'stage {cfg.stage}',
               disable=not progress)
    opened = rollouts or functools.partial(open_rollouts, workers=cfg.workers, config=cfg.rollouts,
                                           out_dir=cfg.out_dir)
    with log, opened(setup) as pool:   # the log closes also when the run stops on an error
        for iteration in bar:
            jobs = iteration_jobs(cfg, iteration, horizons)
            rollouts = pool.collect(model.state_dict(), jobs)
            groups = [rollouts[i:i + cfg.group_size] for i in range(0, len(rollouts), cfg.group_size)]
            scored = [(g, trajectory_rewards(cfg, g, model_cfg.chunk_size)) for g in groups]
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + iteration)
            stats = grpo_update(model, optimizer, scored, cfg.grpo, reference=reference, generator=generator,
                                noise=noise)
            success = np.array([r.metrics.success for r in rollouts])
            # a chunk the safety checks (or the observation checks) refused ended the rollout
            errored = np.array([r.metrics.end_reason == C.END_ERROR for r in rollouts])
            horizon = np.array([r.metrics.n_action_steps for r in rollouts])
            steps = [r.metrics.steps for r in rollouts if r.metrics.success]
            scalars = {'reward': float(np.mean([r for _, rs in scored for r in rs])),
                       'success_rate': float(success.mean()),
                       'steps': float(np.mean(steps)) if steps else math.nan,
                       'n_action_steps': float(horizon.mean()),
                       'group_filter_rate': 1.0 - stats['groups_kept'],
                       'windows': stats['windows'],   # executed (and credited refused) windows in the loss
                       'error_rate': float(errored.mean()),
                       **{k: stats[k] for k in ('kl', 'clip_fraction', 'approx_kl', 'pg_loss')}}
            if cfg.stage == 1:   # which windows succeed, and which the safety checks end
                for h in sorted({h for task_horizons in horizons.values() for h in task_horizons}):
                    scalars[f'success_rate_h{h}'] = float(success[horizon == h].mean())
                    scalars[f'error_rate_h{h}'] = float(errored[horizon == h].mean())
            elapsed = round(time.monotonic() - started, 1)
            for name, value in scalars.items():
                writer.writerow([iteration + 1, name, f'{value:.6g}', elapsed])
            log.flush()
            bar.set_postfix(SR=f"{scalars['success_rate']:.2f}", clip=f"{scalars['clip_fraction']:.2f}")
            done = iteration + 1
            if done % cfg.checkpoint_every == 0 or done == cfg.iterations:
                _save(out, model, optimizer, done, cfg, scalars)
    return out / 'last'
