"""Offline fine-tuning of a deployed VLA from its recorded episode bags (reward-weighted regression).

Every bag under ``bags`` is read with its executed windows (``data.executed``: chunk provenance
when recorded, else the commands); each episode is scored with the PolicyTrim rewards from what
the bag holds (success, steps, the executed h / H) and weighted (``offline_rewards``: AWR or
filtered BC, a task's episodes forming the group). Training then regresses the VLA's chunk on the
executed actions, as behaviour cloning does (``training.bc``: the next H commanded targets from a
step, held past the episode end), drawing each sample with probability proportional to its
episode's weight: the same gradient in expectation as weighting the loss, without spending steps
on weight-0 samples. The samples are every executed step (``samples: steps``) or only the steps
an inference call saw (``samples: calls``). Starts from ``init_from`` with its architecture and
normalization; writes checkpoints like ``train-bc`` (safetensors + config.json, resumable), the
per-episode scores in ``episodes.json`` and scalars in ``scalars.csv``. No ROS needed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from policytrim_ros import resources
from policytrim_ros.config import to_dict
from policytrim_ros.data.dataset import ChunkDataset
from policytrim_ros.data.executed import CHUNK_STATS_TOPIC, PolicyBags, load_policy_bags
from policytrim_ros.policy.checkpoint import load_checkpoint, load_json, save_json
from policytrim_ros.policy.vla.instruction import InstructionEncoder
from policytrim_ros.training.bc import chunk_loss
from policytrim_ros.training.offline_rewards import EpisodeScores, OfflineRewardConfig, episode_scores
from policytrim_ros.training.regression import (log_step, optimize, restore_state, save_state, scheduler,
                                                shift_images)
from policytrim_ros.training.runstate import open_scalars, recover

SAMPLES = ('steps', 'calls')
EPISODES_FILE = 'episodes.json'
"""The run folder's per-episode record: bag, task, seed, success, steps, h, H, reward, advantage, weight."""


@dataclass(frozen=True)
class OfflineConfig:
    """Offline fine-tuning run (``policytrim train-offline``).

    bags: folder of episode bags (searched recursively), e.g. ``policytrim record-policy`` output or bags
        of ``ros2 bag record`` split per episode; extra_bags: more such folders.
    init_from: the checkpoint that was deployed (path or package:// URI); required.
    chunk_stats_topic: the ChunkStats topic in the bags (windows come from the commands without it).
    strict_bags: stop at the first bag that yields no episode instead of skipping (and listing) it.
    rewards: how episodes are scored and weighted (``OfflineRewardConfig``).
    samples: 'steps' (every executed step starts a sample) or 'calls' (only the steps where an
        inference call observed).
    balance_tasks: give every task the same share of the samples drawn (else in proportion to
        its total weight).
    steps, batch_size, lr, weight_decay, warmup_steps, grad_clip, image_shift, hold_after_end,
        seed, num_threads: as in ``BCConfig`` (lr: peak; warm-up then cosine to 10 %).
    log_every, checkpoint_every: steps between scalar rows / checkpoints (where a resume continues).
    out_dir: run folder: last/, checkpoints/step_<n>/, config.json, episodes.json, scalars.csv.
    """

    bags: str = 'runs/bags'
    extra_bags: tuple[str, ...] = ()
    init_from: str = ''
    chunk_stats_topic: str = CHUNK_STATS_TOPIC
    strict_bags: bool = False
    rewards: OfflineRewardConfig = field(default_factory=OfflineRewardConfig)
    samples: str = 'steps'
    balance_tasks: bool = True
    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    grad_clip: float = 1.0
    image_shift: int = 4
    hold_after_end: bool = True
    seed: int = 0
    num_threads: int = 1
    log_every: int = 25
    checkpoint_every: int = 100
    out_dir: str = 'runs/offline'

    def __post_init__(self):
        if not self.init_from:
            raise ValueError("init_from ('') must name the checkpoint the bags were recorded with")
        for name in ('steps', 'batch_size', 'log_every', 'checkpoint_every', 'num_threads'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} ({getattr(self, name)}) must be >= 1')
        if self.warmup_steps < 0 or self.image_shift < 0:
            raise ValueError(f'warmup_steps ({self.warmup_steps}) and image_shift ({self.image_shift}) must be >= 0')
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f'lr ({self.lr}) must be finite and > 0')
        if self.samples not in SAMPLES:
            raise ValueError(f"samples '{self.samples}' must be one of {list(SAMPLES)}")


def score_bags(found: PolicyBags, chunk_size: int, config: OfflineRewardConfig) -> tuple[EpisodeScores, list[dict]]:
    """The scores of the episodes ``found`` (H = ``chunk_size`` where a bag does not record it) and
    one JSON row per episode."""
    eps = found.episodes
    gamma = [p.acceptance_ratio(chunk_size) for p in eps]
    scores = episode_scores([p.episode.task for p in eps], [p.episode.success for p in eps],
                            [p.episode.steps for p in eps], gamma, config, [p.episode.seed for p in eps])
    rows = [{'bag': p.path, 'task': p.episode.task, 'seed': p.episode.seed, 'success': p.episode.success,
             'steps': p.episode.steps, 'inference_calls': len(p.windows), 'n_action_steps': round(p.n_action_steps, 3),
             'chunk_size': p.chunk_size(chunk_size), 'windows_from': p.source, 'reward': round(float(r), 6),
             'advantage': round(float(a), 6), 'weight': round(float(w), 6)}
            for p, r, a, w in zip(eps, scores.reward, scores.advantage, scores.weight)]
    return scores, rows


def sample_probabilities(dataset: ChunkDataset, weights: np.ndarray, samples: str, balance_tasks: bool) -> np.ndarray:
    """(N,) probability of drawing each window of ``dataset``: its episode's weight (of ``weights``,
    (E,) in the dataset's episode order), 0 off the call steps with ``samples`` 'calls', each task's
    total then scaled to an equal share with ``balance_tasks`` (a task whose episodes all weigh 0
    gets none)."""
    lengths = np.array([e.steps for e in dataset.episodes])
    p = np.repeat(np.asarray(weights, dtype=np.float64), lengths)
    if samples == 'calls':
        p *= np.concatenate([np.r_[True, np.diff(e.call_index) != 0] for e in dataset.episodes])
    if balance_tasks:
        for windows in dataset.task_windows().values():
            total = p[windows].sum()
            if total > 0:
                p[windows] /= total
    if not p.sum() > 0:
        raise ValueError('every episode has weight 0: nothing to train on (no successful episode to keep?)')
    return p / p.sum()


def train_offline(cfg: OfflineConfig, resume: bool = False, progress: bool = True) -> Path:
    """Fine-tune ``cfg.init_from`` on the weighted executed windows of ``cfg.bags``; return ``<out_dir>/last``."""
    out = Path(cfg.out_dir)
    recover(out)
    if (out / 'last').exists() and not resume:
        raise FileExistsError(f'{out} already holds a run; pass resume=True (--resume) or pick another out_dir')
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    resuming = resume and (out / 'last').exists()
    model, model_cfg, _ = load_checkpoint(out / 'last' if resuming else resources.resolve(cfg.init_from))
    found = load_policy_bags([cfg.bags, *cfg.extra_bags], cfg.chunk_stats_topic, cfg.strict_bags)
    if not found.episodes:
        raise ValueError(f'no episode in the {found.bags} bags under {[cfg.bags, *cfg.extra_bags]}'
                         + (f'; first skipped: {found.skipped[0]}' if found.skipped else ''))
    scores, rows = score_bags(found, model_cfg.chunk_size, cfg.rewards)
    manifest = {'bags': found.bags, 'episodes': rows, 'step_budget': scores.step_budget,
                'skipped': [{'bag': b, 'reason': r} for b, r in found.skipped]}
    if resuming and (out / EPISODES_FILE).is_file():
        before = load_json(out / EPISODES_FILE)['episodes']
        if [(r['bag'], r['steps']) for r in before] != [(r['bag'], r['steps']) for r in rows]:
            raise ValueError(f'{out} trained on {len(before)} episodes; the bags now give {len(rows)} (or others): '
                             'resume needs the same bags')
    dataset = ChunkDataset([p.episode for p in found.episodes], model_cfg.chunk_size, image_size=model_cfg.image_size,
                           only_successful=False, cameras=model_cfg.cameras or None)
    if tuple(dataset.joint_names) != tuple(model_cfg.joint_names):
        raise ValueError(f'the bags hold joints {list(dataset.joint_names)}; {cfg.init_from} drives '
                         f'{list(model_cfg.joint_names)}')
    probability = sample_probabilities(dataset, scores.weight, cfg.samples, cfg.balance_tasks)
    kept = scores.weight > 0
    print(f'offline: {len(rows)} episodes from {found.bags} bags ({len(found.skipped)} skipped), '
          f'{int(sum(r["success"] for r in rows))} successful; {int(kept.sum())} with weight > 0, '
          f'{int((probability > 0).sum())} samples; episode weights mean {scores.weight.mean():.3f}, '
          f'max {scores.weight.max():.3f} (listed in {out / EPISODES_FILE})', flush=True)
    encoder = InstructionEncoder()
    embeddings = {text: encoder.encode(text) for text in dataset.instructions()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    if resuming:
        start = restore_state(out, optimizer, rng, generator)
    else:
        out.mkdir(parents=True, exist_ok=True)
        save_json(out / 'config.json', to_dict(cfg))
        save_json(out / EPISODES_FILE, manifest)
    schedule = scheduler(optimizer, cfg.warmup_steps, cfg.steps, start)
    log, writer = open_scalars(out / 'scalars.csv', ['step', 'metric', 'value', 'wall_clock_s'], start)
    with log:
        started = time.monotonic()
        model.train()
        for step in tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc='offline', disable=not progress):
            items = [dataset[int(i)] for i in rng.choice(len(dataset), size=cfg.batch_size, p=probability)]
            image = torch.from_numpy(np.stack([it['image'] for it in items]))
            if cfg.image_shift:
                image = shift_images(image, cfg.image_shift, generator)
            text = torch.from_numpy(np.stack([embeddings[it['instruction']] for it in items]))
            state = torch.from_numpy(np.stack([it['state'] for it in items]))
            actions = torch.from_numpy(np.stack([it['actions'] for it in items]))
            mask = torch.from_numpy(np.stack([it['action_mask'] for it in items]))
            loss = chunk_loss(model.normalized_error(model(image, text, state), actions), mask, cfg.hold_after_end)
            grad_norm = optimize(model, optimizer, schedule, loss, cfg.grad_clip)
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                log_step(log, writer, done, loss, grad_norm, schedule, started)
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                save_state(out, done, model, optimizer, rng, generator, {'step': done, 'offline_config': to_dict(cfg)})
    return out / 'last'
