"""``policytrim train-horizon``: GRPO on the efficiency head of a frozen VLA checkpoint.

Each iteration rolls out ``decisions_per_iteration`` trunks (the VLA's mean chunks, each call's h
drawn from the head; tasks cycled, one initial state each) in parallel workers, picks one call of
each trunk at random and branches there: one rollout per h of the set, replaying the trunk's
choices before it and taking the head's most likely h after it. The branches' rewards
(``training.horizon.horizon_rewards``) form that decision's group, and one PPO-clip update of the
head alone follows. Initial states, draws, picked calls and minibatch order are functions of
(seed, iteration), so a run resumed from its last checkpoint continues exactly.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from policytrim_ros import resources
from policytrim_ros.config import to_dict
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.factory import suite_control_dt, suite_joint_names, task_suite
from policytrim_ros.envs.metaworld_config import MetaWorldConfig
from policytrim_ros.execution.config import SafetyConfig
from policytrim_ros.policy.checkpoint import (load_checkpoint, load_trainer_state, save_checkpoint, save_json,
                                              save_trainer_state)
from policytrim_ros.training.horizon import (DecisionGroup, HeadUpdateConfig, HorizonRewardConfig, HorizonRollout,
                                             branch_choices, head_update, horizon_rewards)
from policytrim_ros.training.runstate import open_scalars, recover, save_atomically
from policytrim_ros.training.trainer import RL_SEED_OFFSET
from policytrim_ros.training.engines import open_rollouts
from policytrim_ros.training.workers import RolloutJob, RolloutSetup, RolloutsConfig


@dataclass(frozen=True)
class HorizonTrainConfig:
    """Training of an efficiency head.

    init: the VLA checkpoint (a directory or package:// URI) whose chunks the head times; frozen.
        If it already has a head over the same ``horizons``, training continues from it.
    horizons: the executed lengths h the head picks from (increasing, each <= the model's H).
    hidden_size: width of the head's hidden layers.
    tasks: tasks of one suite; trunks cycle through them.
    iterations: GRPO iterations (rollout + update).
    decisions_per_iteration: trunks per iteration, each one task and initial state, and each
        branched at one of its calls into one rollout per h of the set (a group of K = len(horizons)):
        (1 + K) rollouts per decision.
    replay_iterations: each update reads the decision groups of this many last iterations (this
        one included): a group's advantages are Monte Carlo estimates that stay informative after
        the head moved on, and a dozen groups alone let one update overfit them (measured: the head
        collapsed to the longest h in 10 iterations). 1 = on-policy only.
    reward: the trajectory reward. update: the head's PPO-clip update.
    lr: Adam learning rate of the head.
    max_episode_steps: step limit per rollout.
    workers: rollout processes (0 = in this process) of the local engine.
    envs_per_worker: envs each rollout worker (a process, or a Ray actor) steps in lockstep, their
        inference calls batched (``training.lockstep``): the same rollouts with any number, ~1.1x less
        CPU a rollout at 4 (docs/experiments.md, section 5).
    rollouts: where rollouts run: this machine's processes (engine 'local', the default) or a Ray
        cluster (engine 'ray', docs/scale-out.md).
    seed: seed of initial states (RL_SEED_OFFSET + ...), h draws and minibatch order.
    checkpoint_every: iterations between checkpoints (also where a resumed run continues).
    out_dir: run folder: checkpoints/, last/, scalars.csv, config.json.
    """

    init: str = 'package://policytrim_ros/models/bc-wrist-h32-dagger'
    horizons: tuple[int, ...] = (4, 8, 16, 24, 32)
    hidden_size: int = 64
    tasks: tuple[str, ...] = ('reach', 'push', 'pick_place')
    iterations: int = 40
    decisions_per_iteration: int = 16
    replay_iterations: int = 10
    reward: HorizonRewardConfig = field(default_factory=HorizonRewardConfig)
    update: HeadUpdateConfig = field(default_factory=HeadUpdateConfig)
    lr: float = 3e-4
    max_episode_steps: int = 150
    workers: int = 2
    envs_per_worker: int = 4
    rollouts: RolloutsConfig = field(default_factory=RolloutsConfig)
    seed: int = 0
    checkpoint_every: int = 5
    out_dir: str = 'runs/horizon'

    def __post_init__(self):
        for name in ('iterations', 'decisions_per_iteration', 'replay_iterations', 'checkpoint_every', 'max_episode_steps',
                     'hidden_size', 'envs_per_worker'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} ({getattr(self, name)}) must be >= 1')
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f'lr ({self.lr}) must be > 0')
        task_suite(self.tasks)   # unknown tasks, or tasks of both suites, fail here


def trunk_jobs(cfg: HorizonTrainConfig, iteration: int, longest: int) -> list[RolloutJob]:
    """One iteration's trunks: tasks cycled, initial state and h draws functions of (seed, iteration);
    ``longest`` caps every window."""
    jobs = []
    for g in range(cfg.decisions_per_iteration):
        index = iteration * cfg.decisions_per_iteration + g
        initial = RL_SEED_OFFSET + cfg.seed * 10_000_000 + index
        task = cfg.tasks[index % len(cfg.tasks)]
        jobs.append(RolloutJob(task, initial, longest, noise_seed=2 * initial, episode_id=f'{task}-{initial}-trunk'))
    return jobs


def branch_jobs(cfg: HorizonTrainConfig, iteration: int, trunks: list[RolloutJob],
                rollouts: list[HorizonRollout]) -> list[tuple[int, int, list[RolloutJob]]]:
    """[(trunk index, picked call, its K branch jobs)] for every trunk that made a call. The branches
    replay the trunk's choices before the call and continue with the head's most likely h."""
    rng = np.random.default_rng([cfg.seed, iteration])
    out = []
    for t, (job, rollout) in enumerate(zip(trunks, rollouts)):
        if not len(rollout.choices):
            continue
        call = int(rng.integers(len(rollout.choices)))
        branches = [replace(job, noise_seed=job.noise_seed + 1, forced=forced, greedy=True,
                            episode_id=f'{job.task}-{job.seed}-call{call}-h{cfg.horizons[forced[-1]]}')
                    for forced in branch_choices(rollout, call, len(cfg.horizons))]
        out.append((t, call, branches))
    return out


def _replay_tensors(replay: list[tuple[int, DecisionGroup]]) -> dict[str, torch.Tensor]:
    return {'replay.iteration': torch.tensor([i for i, _ in replay], dtype=torch.int64),
            'replay.features': torch.from_numpy(np.stack([g.features for _, g in replay]).astype(np.float32)),
            'replay.rewards': torch.from_numpy(np.stack([g.rewards for _, g in replay]).astype(np.float64))}


def _replay_groups(tensors: dict[str, torch.Tensor]) -> list[tuple[int, DecisionGroup]]:
    if 'replay.iteration' not in tensors:
        return []
    return [(int(i), DecisionGroup(f.numpy(), r.numpy())) for i, f, r in
            zip(tensors['replay.iteration'], tensors['replay.features'], tensors['replay.rewards'])]


def _save(out: Path, model, optimizer, iteration: int, cfg: HorizonTrainConfig, scalars: dict,
          replay: list[tuple[int, DecisionGroup]]) -> None:
    metadata = {'efficiency_head': to_dict(cfg), 'iteration': iteration, 'init': cfg.init, **scalars}

    def last(directory: Path) -> None:
        save_checkpoint(directory, model, model.config, metadata)
        save_trainer_state(directory, optimizer, {'iteration': iteration}, _replay_tensors(replay) if replay else None)

    save_atomically(out, {f'checkpoints/iter_{iteration:05d}': lambda d: save_checkpoint(d, model, model.config,
                                                                                         metadata),
                          'last': last})


def _initial_model(cfg: HorizonTrainConfig, out: Path, resuming: bool):
    model, config, _ = load_checkpoint(out / 'last' if resuming else resources.resolve(cfg.init))
    if tuple(config.joint_names) != suite_joint_names(task_suite(cfg.tasks)):
        raise ValueError(f'{cfg.init} commands {list(config.joint_names)}, not the joints of the env of tasks '
                         f'{list(cfg.tasks)}: train a head on tasks of the robot its VLA was trained for')
    if cfg.horizons[-1] > config.chunk_size:
        raise ValueError(f'horizons {list(cfg.horizons)} go beyond the chunk size H ({config.chunk_size}) of {cfg.init}')
    if resuming or (config.horizons == tuple(cfg.horizons) and config.horizon_hidden_size == cfg.hidden_size):
        return model
    with torch.random.fork_rng():   # the head's initial weights are a function of the seed
        torch.manual_seed(cfg.seed)
        return model.with_horizon_head(tuple(cfg.horizons), cfg.hidden_size).eval()


def train_horizon_head(cfg: HorizonTrainConfig, env: EnvConfig | None = None, safety: SafetyConfig | None = None,
                       resume: bool = False, progress: bool = True,
                       metaworld: MetaWorldConfig | None = None, rollouts=None) -> Path:
    """Train the head; return the folder of the final checkpoint (``<out_dir>/last``): the init's VLA,
    unchanged, with the head. ``env``/``metaworld`` configure the suite's env, ``safety`` checks every
    chunk (None = no limits); ``rollouts`` is where the episodes run (``train_policytrim``'s)."""
    out = Path(cfg.out_dir)
    recover(out)
    if (out / 'last').exists() and not resume:
        raise FileExistsError(f'{out} already holds a run; pass resume=True (--resume) or pick another out_dir')
    torch.set_num_threads(1)
    resuming = resume and (out / 'last').exists()
    model = _initial_model(cfg, out, resuming)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.horizon_head.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(model.horizon_head.parameters(), lr=cfg.lr)
    start, replay = 0, []   # replay: (iteration, group) of the last replay_iterations iterations
    if resuming:
        meta, tensors = load_trainer_state(out / 'last', optimizer)
        start, replay = meta['iteration'], _replay_groups(tensors)
    if start >= cfg.iterations:
        return out / 'last'
    if start == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_json(out / 'config.json', to_dict(cfg))
    env = env or EnvConfig()
    suite = task_suite(cfg.tasks)
    setup = RolloutSetup(model.config, env, safety or SafetyConfig(), cfg.max_episode_steps,
                         suite_control_dt(suite, env), tuple(cfg.tasks), metaworld or MetaWorldConfig(),
                         sample='horizon', envs_per_worker=cfg.envs_per_worker)
    horizons = np.array(cfg.horizons)
    longest = cfg.horizons[-1]
    log, writer = open_scalars(out / 'scalars.csv', ['iteration', 'metric', 'value', 'wall_clock_s'], start)
    started = time.monotonic()
    bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations, desc='efficiency head',
               disable=not progress)
    opened = rollouts or functools.partial(open_rollouts, workers=cfg.workers, config=cfg.rollouts,
                                           out_dir=cfg.out_dir)
    with log, opened(setup) as pool:
        for iteration in bar:
            jobs = trunk_jobs(cfg, iteration, longest)
            trunks = pool.collect(model.state_dict(), jobs)
            plan = branch_jobs(cfg, iteration, jobs, trunks)
            branched = pool.collect(None, [b for _, _, branches in plan for b in branches])   # same weights
            k = len(cfg.horizons)
            groups = [DecisionGroup(trunks[t].features[call], horizon_rewards(branched[i * k:(i + 1) * k], cfg.reward))
                      for i, (t, call, _) in enumerate(plan)]
            replay = [(i, g) for i, g in replay if i > iteration - cfg.replay_iterations] + \
                [(iteration, g) for g in groups]
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + iteration)
            stats = head_update(model, optimizer, [g for _, g in replay], cfg.update, generator)
            success = np.array([r.metrics.success for r in trunks])
            calls = [r.metrics.inference_calls for r in trunks if r.metrics.success]
            chosen = np.concatenate([r.choices for r in trunks])
            scalars = {'success_rate': float(success.mean()),      # of the trunks: the head as it samples
                       'inference_calls': float(np.mean(calls)) if calls else math.nan,
                       'mean_h': float(horizons[chosen].mean()) if len(chosen) else math.nan,
                       'reward': float(np.mean(horizon_rewards(trunks, cfg.reward))),
                       'branch_success_rate': float(np.mean([r.metrics.success for r in branched])),
                       'new_decisions': float(sum(np.ptp(g.rewards) > 0 for g in groups)),
                       **{k: stats[k] for k in ('decisions', 'pg_loss', 'entropy', 'approx_kl', 'clip_fraction')}}
            branch_success = np.array([r.metrics.success for r in branched]).reshape(-1, k)
            for i, h in enumerate(cfg.horizons):
                scalars[f'share_h{h}'] = float((chosen == i).mean()) if len(chosen) else 0.0
                # success when the picked call ran h (and the head after it): which h a decision can afford
                scalars[f'branch_success_rate_h{h}'] = float(branch_success[:, i].mean()) if len(plan) else math.nan
            elapsed = round(time.monotonic() - started, 1)
            for name, value in scalars.items():
                writer.writerow([iteration + 1, name, f'{value:.6g}', elapsed])
            log.flush()
            bar.set_postfix(SR=f"{scalars['success_rate']:.2f}", calls=f"{scalars['inference_calls']:.1f}",
                            h=f"{scalars['mean_h']:.1f}")
            done = iteration + 1
            if done % cfg.checkpoint_every == 0 or done == cfg.iterations:
                _save(out, model, optimizer, done, cfg, scalars, replay)
    return out / 'last'
