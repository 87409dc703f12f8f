"""``BCConfig``: the settings of a behaviour cloning run (``training.bc.train_bc``), with their rules."""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BCConfig:
    """Behaviour cloning run.

    demos: folder of demonstration bags (``policytrim collect`` output), searched recursively; all
        of one robot (the arm's tasks, or Meta-World's '-v3' tasks: joint names must agree).
    extra_demos: more folders of bags trained on together with ``demos`` (e.g. takeover
        demonstrations, ``policytrim collect --takeover``); same robot, same styles filter.
    styles: operator styles of the bags to train on (efficient, teleop; recorded for robot bags).
    strict_bags: stop at the first bag that does not yield its whole episode (BagError naming it)
        instead of training without it: by default a damaged MCAP bag gives what its intact chunks
        hold (``data.salvage``), one with nothing usable is skipped, and both are listed in a
        warning and in the run's dataset.json.
    cameras: the demos' cameras the policy sees, tiled in this order (e.g. [scene_camera,
        wrist_camera]); [] = every camera the demos recorded, in their order.
    model: VLA preset (vla-2m or vla-10m).
    chunk_size: H, actions predicted per call.
    action_offsets: predict targets as offsets from the state (True: joint position targets, the
        embedded arm) or the actions themselves (False: velocity-like actions, Meta-World's
        end-effector deltas); see ``VLAConfig.action_offsets``.
    steps: gradient steps.
    batch_size: windows per step.
    lr: peak AdamW learning rate (linear warm-up, then cosine decay to 10 %).
    weight_decay: AdamW weight decay.
    warmup_steps: steps of linear learning-rate warm-up.
    grad_clip: max global gradient norm.
    image_shift: random image shift augmentation in pixels (0 = off).
    balance_tasks: sample tasks equally often (each window: a task uniformly, then one of its
        windows), whatever their episode lengths; False samples windows uniformly.
    task_weights: with balance_tasks, relative weights of tasks in that draw ({push: 2.0}: push
        windows twice as often as each unnamed task, which weighs 1); {} = equal. For spending
        more of the steps on the task a policy fails most, without collecting more of it.
    hold_after_end: train on the padding past an episode's end (the last target, held), so the
        policy learns to stop where demonstrations stopped; False masks the padding out of the loss.
        Measured: without it, a 4000-step reach policy passed within 3.5 cm of the goal and drove on
        (SR 2/8).
    step_weighting: weigh chunk step k's squared error in the loss by 1 / (its share of the target
        variance), i.e. measure each step's error relative to how far step k's targets lie from the
        state (``ChunkDataset.statistics`` step_delta_std; weights clipped at 100, mean 1). False
        weighs every step alike, so the far targets (large, and the least predictable under
        teleop hesitations) dominate the loss and the first actions, the ones a small h executes,
        are fitted least precisely. Measured on the teleop demos (vla-2m, 8000 steps, seed 0, 50
        episodes per task at h = 4): SR 0.72 / 0.42 / 0.52 (reach / push / pick_place) against
        0.84 / 0.46 / 0.42 without it, i.e. no gain; off by default.
    ema_decay: keep an exponential moving average of the weights with this decay per step (0 = off;
        e.g. 0.998 averages over about the last 500 steps, as Diffusion Policy's EMA does over its
        far longer runs). The decay ramps up as min(ema_decay, (1 + t) / (10 + t)) so the average
        does not linger on the first weights. With it on, checkpoints/ and last/ hold the average
        (what ``eval`` and ``release`` then use) and raw/ holds the trained weights themselves (with
        last/'s optimizer state, what ``resume`` continues from), so both can be evaluated.
    seed: seed of the model init, batch sampling and augmentation.
    init_from: checkpoint to continue training from with a fresh optimizer and schedule (its
        architecture and normalization are kept; the model preset is ignored); '' = random init.
        A chunk_size above its H extends it (``VLAModel.extended``: each new step's query starts as a
        copy of step H's), so a longer chunk learns from a trained model, not from scratch.
        ``package://policytrim_ros/models/...`` names a shipped one.
    log_every: steps between scalar rows.
    checkpoint_every: steps between checkpoints (also where an interrupted run resumes).
    eval_every: steps between closed-loop evaluations (a multiple of checkpoint_every; 0 = only at the end).
    eval_episodes: evaluation episodes per task (0 = no evaluation).
    eval_n_action_steps: h used by the evaluation.
    eval_seed: seed of the first evaluation episode (evaluation seeds start at 1000).
    num_threads: torch CPU threads for training. 1 by default: with 2 threads on a 2-core machine
        that also runs anything else, OpenMP spin-waits made a step 25x slower (6.8 s vs 0.26 s).
    out_dir: run folder: checkpoints/, last/, raw/ (with ema_decay), scalars.csv, config.json, and
        dataset.json (the episodes and steps trained on, the bags skipped or salvaged and why).
    """

    demos: str = 'runs/demos'
    extra_demos: tuple[str, ...] = ()
    styles: tuple[str, ...] = ('teleop',)
    strict_bags: bool = False
    cameras: tuple[str, ...] = ()
    model: str = 'vla-2m'
    chunk_size: int = 16
    action_offsets: bool = True
    steps: int = 4000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    grad_clip: float = 1.0
    image_shift: int = 4
    balance_tasks: bool = True
    task_weights: dict[str, float] = field(default_factory=dict)
    hold_after_end: bool = True
    step_weighting: bool = False
    ema_decay: float = 0.0
    seed: int = 0
    init_from: str = ''
    log_every: int = 50
    checkpoint_every: int = 500
    eval_every: int = 2000
    eval_episodes: int = 10
    eval_n_action_steps: int = 4
    eval_seed: int = 1000
    num_threads: int = 1
    out_dir: str = 'runs/bc'

    def __post_init__(self):
        for name in ('steps', 'batch_size', 'log_every', 'checkpoint_every', 'num_threads'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} ({getattr(self, name)}) must be >= 1')
        if not self.lr > 0:
            raise ValueError(f'lr ({self.lr}) must be > 0')
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f'ema_decay ({self.ema_decay}) must be in [0, 1): 0 is off, 0.998 averages '
                             f'over about 500 steps')
        bad = {task: w for task, w in self.task_weights.items() if not (isinstance(w, (int, float)) and 0 < w < math.inf)}
        if bad:
            raise ValueError(f'task_weights {bad} must be finite numbers > 0')
        if self.task_weights and not self.balance_tasks:
            raise ValueError('task_weights weigh the task draw of balance_tasks; set balance_tasks: true')
        if self.eval_every % self.checkpoint_every:
            raise ValueError(f'eval_every ({self.eval_every}) must be a multiple of checkpoint_every '
                             f'({self.checkpoint_every}): evaluation runs on saved checkpoints')
