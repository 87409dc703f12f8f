"""Behaviour cloning of the compact VLA from demonstration bags.

The chunk head regresses the next H commanded actions (MSE in normalized delta units). Past the
episode end a window is padded with the last commanded target, and by default the padding is
trained on (as Diffusion Policy does; ACT masks it out): demonstrations end at the first
successful step, so without it the policy never sees a chunk that stops and drives through the goal. CPU-friendly defaults; a tqdm progress bar; scalars in ``scalars.csv``;
checkpoints (safetensors + JSON, optimizer and RNG state included) every ``checkpoint_every``
steps, so ``resume`` continues exactly where a crashed run stopped; periodic evaluation runs
closed-loop episodes of the saved checkpoint with the ROS-free sweep. The demonstrations may be of
the embedded arm or of Meta-World (not both): the model's state/action size, joint names and image
size come from the dataset, and evaluation runs the dataset's tasks in their env. The run's settings:
``training.bc_config.BCConfig``.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from policytrim_ros import resources
from policytrim_ros.config import to_dict
from policytrim_ros.data.dataset import ChunkDataset
from policytrim_ros.envs.factory import suite_control_dt, task_suite
from policytrim_ros.policy.checkpoint import load_checkpoint, load_json, save_checkpoint, save_json
from policytrim_ros.policy.vla.configuration_vla import preset
from policytrim_ros.policy.vla.instruction import InstructionEncoder
from policytrim_ros.policy.vla.modeling_vla import VLAModel
from policytrim_ros.training.bc_config import BCConfig
from policytrim_ros.training.regression import (log_step, optimize, restore_state, save_state, scheduler,
                                                shift_images)
from policytrim_ros.training.runstate import open_scalars, recover

RAW_DIR = 'raw'
"""With ``ema_decay``, the run folder's copy of the trained (not averaged) weights."""
DATASET_FILE = 'dataset.json'
"""The run folder's record of the demonstrations it trained on (``_dataset_manifest``)."""


def step_weights(delta_std: np.ndarray, step_delta_std: np.ndarray, max_ratio: float = 100.0) -> torch.Tensor:
    """(H, A) loss weights ``(delta_std / step_delta_std[k])**2``, clipped at ``max_ratio``, mean 1.

    delta_std: (A,) std of the targets' offsets over all chunk steps (the normalization of the
    error); step_delta_std: (H, A) the same per chunk step.
    """
    ratio = np.minimum((np.asarray(delta_std)[None] / np.asarray(step_delta_std)) ** 2, max_ratio)
    return torch.as_tensor(ratio / ratio.mean(), dtype=torch.float32)


def chunk_loss(error: torch.Tensor, mask: torch.Tensor, hold_after_end: bool,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared ``error`` (B, H, A) over every step, or only where ``mask`` (B, H) is True;
    each (step, dimension) scaled by ``weights`` (H, A) when given."""
    squared = error.square() if weights is None else error.square() * weights
    if hold_after_end:
        return squared.mean()
    weight = mask.unsqueeze(-1).to(error.dtype)
    return (squared * weight).sum() / (weight.sum() * error.shape[-1])


class Batches:
    """Random training batches from a ChunkDataset, with the instruction embeddings looked up.

    balance_tasks: draw each window's task uniformly (or in proportion to ``task_weights``, tasks
    not named weigh 1), then a window of that task; otherwise draw windows uniformly (a task then
    weighs as much as its steps: reach, 13 % of the teleop windows, was the task a BC policy
    learned last).
    """

    def __init__(self, dataset: ChunkDataset, embeddings: dict[str, np.ndarray], balance_tasks: bool,
                 task_weights: dict[str, float] | None = None):
        self.dataset, self.embeddings = dataset, embeddings
        task_windows = dataset.task_windows()
        unknown = sorted(set(task_weights or {}) - set(task_windows))
        if unknown:
            raise ValueError(f'task_weights name {unknown}, which the demos do not hold; their tasks: '
                             f'{sorted(task_windows)}')
        self.windows = list(task_windows.values()) if balance_tasks else [np.arange(len(dataset))]
        self.task_share = None   # equal: drawn with rng.integers, the stream every earlier run used
        if task_weights:
            weights = np.array([task_weights.get(task, 1.0) for task in task_windows])
            self.task_share = weights / weights.sum()

    def sample(self, rng: np.random.Generator, size: int) -> dict[str, torch.Tensor]:
        groups = (rng.integers(len(self.windows), size=size) if self.task_share is None
                  else rng.choice(len(self.windows), size=size, p=self.task_share))
        indices = [self.windows[g][rng.integers(len(self.windows[g]))] for g in groups]
        items = [self.dataset[int(i)] for i in indices]
        return {
            'image': torch.from_numpy(np.stack([it['image'] for it in items])),
            'text': torch.from_numpy(np.stack([self.embeddings[it['instruction']] for it in items])),
            'state': torch.from_numpy(np.stack([it['state'] for it in items]).astype(np.float32)),
            'actions': torch.from_numpy(np.stack([it['actions'] for it in items]).astype(np.float32)),
            'mask': torch.from_numpy(np.stack([it['action_mask'] for it in items])),
        }


class WeightAverage:
    """Exponential moving average of a model's weights (its buffers, the normalization, copied).

    ``update(t)`` after optimizer step t folds the weights in with decay
    min(decay, (1 + t) / (10 + t)); ``model`` is the averaged copy, ready to save or evaluate.
    """

    def __init__(self, model: torch.nn.Module, decay: float, average: torch.nn.Module | None = None):
        self.decay = decay
        self.model = copy.deepcopy(model) if average is None else average
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for average, current in zip(self.model.parameters(), model.parameters()):
            average.lerp_(current, 1.0 - decay)
        for average, current in zip(self.model.buffers(), model.buffers()):
            average.copy_(current)


def _save(out: Path, model: VLAModel, optimizer, step: int, rng, generator, cfg: BCConfig, scalars: dict,
          average: WeightAverage | None = None):
    """Checkpoint ``step`` (``regression.save_state``); with a weight average, checkpoints/ and last/
    hold the average and raw/ the trained weights."""
    meta = {'step': step, 'bc_config': to_dict(cfg), **scalars}
    if average is None:
        save_state(out, step, model, optimizer, rng, generator, meta)
        return
    save_state(out, step, model, optimizer, rng, generator, {**meta, 'ema_decay': cfg.ema_decay}, saved=average.model,
               extra={RAW_DIR: lambda d: save_checkpoint(d, model, model.config, {**meta, 'ema_decay': 0.0})})


def _dataset_manifest(out: Path, dataset: ChunkDataset, resume: bool) -> dict:
    """What the run trains on (printed; written to dataset.json at its start). A resumed run must
    see the same episodes and steps, else it would not continue the same training."""
    report = dataset.report
    manifest = {'episodes': report.episodes, 'steps': report.steps, 'bags': report.bags,
                'skipped': [{'bag': b, 'reason': r} for b, r in report.skipped],
                'recovered': [{'bag': b, 'note': n} for b, n in report.recovered]}
    print(f'bc: training on {report.episodes} episodes, {report.steps} steps from {report.bags} bags '
          f'({len(report.skipped)} skipped, {len(report.recovered)} recovered; listed in {out / DATASET_FILE})',
          flush=True)
    if resume and (out / DATASET_FILE).is_file():
        before = load_json(out / DATASET_FILE)
        if (before['episodes'], before['steps']) != (report.episodes, report.steps):
            raise ValueError(f"{out} trained on {before['episodes']} episodes, {before['steps']} steps; the demos now "
                             f'give {report.episodes} and {report.steps}: resume needs the same demonstrations '
                             '(restore them, or start a new run with init_from)')
    return manifest


def _evaluate(checkpoint: Path, cfg: BCConfig, tasks: list[str]) -> dict[str, float]:
    """Success rate per task of the checkpoint at h = eval_n_action_steps, in the tasks' default env
    (the embedded arm rendering the checkpoint's cameras)."""
    from policytrim_ros.envs.config import EnvConfig
    from policytrim_ros.envs.registry import task_names
    from policytrim_ros.evaluation.sweep import SweepConfig, run_sweep
    from policytrim_ros.execution.metrics import summarize_by_task
    from policytrim_ros.policy.factory import PolicyConfig
    model_cfg = json.loads((checkpoint / 'config.json').read_text())['config']
    sweep = SweepConfig(policy=PolicyConfig('torch', str(checkpoint)), tasks=tuple(tasks),
                        n_action_steps=(cfg.eval_n_action_steps,), chunk_size=model_cfg['chunk_size'],
                        episodes=cfg.eval_episodes, seed=cfg.eval_seed,
                        control_dt=suite_control_dt(task_suite(tasks)), workers=2)
    if model_cfg.get('cameras') and set(tasks) <= set(task_names()):
        sweep = replace(sweep, env=EnvConfig(cameras=tuple(model_cfg['cameras'])))
    summary = summarize_by_task(run_sweep(sweep, progress=False)[cfg.eval_n_action_steps])
    return {f'eval/{task}/success_rate': s['success_rate'] for task, s in summary.items()}


def train_bc(cfg: BCConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train; return the folder of the final checkpoint (``<out_dir>/last``)."""
    out = Path(cfg.out_dir)
    recover(out)   # a save a kill interrupted: finished if it was complete, else the previous state stays
    if (out / 'last').exists() and not resume:
        raise FileExistsError(f'{out} already holds a run; pass resume=True (--resume) or pick another out_dir')
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    dataset = ChunkDataset([cfg.demos, *cfg.extra_demos], cfg.chunk_size, styles=cfg.styles,
                           cameras=cfg.cameras or None, strict=cfg.strict_bags)
    manifest = _dataset_manifest(out, dataset, resume)
    first = dataset[0]
    joint_names = tuple(dataset.joint_names)
    stats = dataset.statistics(cfg.action_offsets)
    camera_sets = {episode.cameras for episode in dataset.episodes}
    if len({max(1, len(c)) for c in camera_sets}) > 1:
        raise ValueError(f'the demos mix camera setups {sorted(camera_sets)}; train on one setup')
    cameras = camera_sets.pop() if len(camera_sets) == 1 else ()   # the named cameras, or no contract
    model_cfg = preset(cfg.model, chunk_size=cfg.chunk_size, action_offsets=cfg.action_offsets,
                       state_dim=len(joint_names),
                       action_dim=len(joint_names), joint_names=joint_names,
                       image_height=first['image'].shape[0], image_width=first['image'].shape[1],
                       action_low=tuple(stats['action_min'].tolist()),
                       action_high=tuple(stats['action_max'].tolist()), cameras=cameras)
    encoder = InstructionEncoder()
    batches = Batches(dataset, {text: encoder.encode(text) for text in dataset.instructions()},
                       cfg.balance_tasks, cfg.task_weights)
    tasks = sorted({episode.task for episode in dataset.episodes})
    if cfg.eval_episodes:
        task_suite(tasks)  # tasks no env runs (or of both robots) fail now, not at the first evaluation
    average = None
    if resume and (out / 'last').exists():
        model, _, _ = load_checkpoint(out / (RAW_DIR if cfg.ema_decay else 'last'))
        if cfg.ema_decay:
            average = WeightAverage(model, cfg.ema_decay, load_checkpoint(out / 'last')[0])
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        start = restore_state(out, optimizer, rng, generator)
    else:
        if cfg.init_from:
            model, init_cfg, _ = load_checkpoint(resources.resolve(cfg.init_from))
            if (init_cfg.joint_names, init_cfg.image_size) != (model_cfg.joint_names, model_cfg.image_size) \
                    or init_cfg.chunk_size > model_cfg.chunk_size:
                raise ValueError(f'init_from {cfg.init_from} has joints {list(init_cfg.joint_names)}, H '
                                 f'{init_cfg.chunk_size} and images {init_cfg.image_size}; the demos need '
                                 f'{list(model_cfg.joint_names)}, H <= {model_cfg.chunk_size} and '
                                 f'{model_cfg.image_size}')
            if init_cfg.chunk_size < model_cfg.chunk_size:   # a longer chunk: new steps start as step H, held
                model = model.extended(model_cfg.chunk_size, generator=torch.Generator().manual_seed(cfg.seed))
            model.config = replace(model.config, cameras=cameras)   # the cameras these demos were taken with
        else:
            model = VLAModel(model_cfg)
            model.set_normalization(stats['state_mean'], stats['state_std'], stats['delta_mean'],
                                    stats['delta_std'])
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        start = 0
        average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
        out.mkdir(parents=True, exist_ok=True)
        save_json(out / 'config.json', to_dict(cfg))
        save_json(out / DATASET_FILE, manifest)
    # the weights follow the model's own normalization (an init_from model keeps its statistics)
    weights = (step_weights(model.delta_std.numpy(), stats['step_delta_std']) if cfg.step_weighting else None)
    schedule = scheduler(optimizer, cfg.warmup_steps, cfg.steps, start)
    log, writer = open_scalars(out / 'scalars.csv', ['step', 'metric', 'value', 'wall_clock_s'], start)
    with log:   # closed also when the run stops on an error
        started = time.monotonic()
        bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc='bc', disable=not progress)
        model.train()
        for step in bar:
            batch = batches.sample(rng, cfg.batch_size)
            image = shift_images(batch['image'], cfg.image_shift, generator) if cfg.image_shift else batch['image']
            error = model.normalized_error(model(image, batch['text'], batch['state']), batch['actions'])
            loss = chunk_loss(error, batch['mask'], cfg.hold_after_end, weights)
            grad_norm = optimize(model, optimizer, schedule, loss, cfg.grad_clip)
            if average is not None:
                average.update(model, step)
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                log_step(log, writer, done, loss, grad_norm, schedule, started)
                bar.set_postfix(loss=f'{loss.item():.4f}')
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                scalars = {}
                if cfg.eval_episodes and ((cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps):
                    _save(out, model, optimizer, done, rng, generator, cfg, {}, average)
                    scalars = _evaluate(out / 'last', cfg, tasks)
                    for name, value in scalars.items():
                        writer.writerow([done, name, f'{value:.4g}', round(time.monotonic() - started, 1)])
                    log.flush()
                    bar.write(f'step {done}: ' + ', '.join(f'{k} {v:.2f}' for k, v in scalars.items()))
                _save(out, model, optimizer, done, rng, generator, cfg, scalars, average)
    return out / 'last'
