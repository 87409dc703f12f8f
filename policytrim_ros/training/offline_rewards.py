"""PolicyTrim rewards of recorded episodes and the regression weights offline fine-tuning uses.

Offline, a group is by default a task's recorded episodes (``group_by: task``): a real robot does
not replay one initial state G times, so the baseline of each advantage (and Stage 2's mean and
spread) is taken over the episodes of the same task. Recordings that do replay an initial state
(the embedded arm's seeds, e.g. each seed run at several h) can group by seed instead
(``group_by: seed``, GRPO's group). Per episode (arrays of shape (E,)):

    reward     'success':   success
               'extension': success * (1 + beta * gamma)                 Stage 1, gamma = mean h / H
               'steps':     Stage 2 (``rewards.step_rewards``): success * (1 + w * saving - lambda * penalty),
                            S_base = alpha * the task's mean successful steps
    advantage  (R - mean_group R) / (std_group R + eps), population std; 0 in a group whose rewards are all equal
    weight     'awr':      min(exp(advantage / temperature), max_weight)      (AWR, Peng et al. 2019)
               'filtered': 1 for the successful episodes whose reward is in the top keep_fraction
                           of the group's successful ones, else 0           (filtered BC)

Every executed step of an episode carries its episode's weight (GRPO broadcasts a trajectory's
advantage the same way). A group whose success rate is below ``min_success_rate`` weighs 0 (as
GRPO drops such groups): imitating only failures teaches nothing good.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from policytrim_ros.training.rewards import ExtensionRewardConfig, StepRewardConfig, extension_rewards, step_rewards

REWARDS = ('success', 'extension', 'steps')
GROUPS = ('task', 'seed')
WEIGHTINGS = ('awr', 'filtered')


@dataclass(frozen=True)
class OfflineRewardConfig:
    """How recorded episodes are scored and weighted.

    reward: 'success', 'extension' (Stage 1) or 'steps' (Stage 2); see the module docstring.
    extension: Stage 1's beta.
    step: Stage 2's step_weight, stability_weight, sigma_floor and floor_mode.
    step_budget_alpha: S_base = alpha * the task's mean successful steps (paper default 1.3).
    weighting: 'awr' (exponentiated advantages) or 'filtered' (keep the best successes, weight 1).
    temperature: AWR temperature, in units of the task's reward std (advantages are standardized);
        lower trusts the ranking more.
    max_weight: AWR weight clip (AWR uses 20).
    keep_fraction: filtered: the share of each task's successful episodes kept, best reward first
        (1.0 keeps every success: plain success-filtered BC).
    advantage_eps: added to the task's reward std.
    group_by: 'task' (a task's episodes form a group) or 'seed' (a task's episodes from one seed:
        recordings that replay an initial state, e.g. at several h; a real robot's bags have no seed).
    min_success_rate: a group whose episodes succeed less often than this weighs 0 altogether (the
        GRPO group filter, DESIGN.md: without successes there is nothing to imitate; 0 keeps it).
    """

    reward: str = 'steps'
    extension: ExtensionRewardConfig = field(default_factory=ExtensionRewardConfig)
    step: StepRewardConfig = field(default_factory=StepRewardConfig)
    step_budget_alpha: float = 1.3
    weighting: str = 'awr'
    temperature: float = 1.0
    max_weight: float = 20.0
    keep_fraction: float = 1.0
    advantage_eps: float = 1e-6
    group_by: str = 'task'
    min_success_rate: float = 0.1

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(f"reward '{self.reward}' must be one of {list(REWARDS)}")
        if self.group_by not in GROUPS:
            raise ValueError(f"group_by '{self.group_by}' must be one of {list(GROUPS)}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting '{self.weighting}' must be one of {list(WEIGHTINGS)}")
        for name, low in (('step_budget_alpha', 0.0), ('temperature', 0.0), ('advantage_eps', 0.0)):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > low):
                raise ValueError(f'{name} ({value}) must be finite and > {low}')
        if not (math.isfinite(self.max_weight) and self.max_weight >= 1.0):
            raise ValueError(f'max_weight ({self.max_weight}) must be finite and >= 1 (exp(0) = 1 is the average episode)')
        if not 0.0 <= self.min_success_rate <= 1.0:
            raise ValueError(f'min_success_rate ({self.min_success_rate}) must be in [0, 1]')
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f'keep_fraction ({self.keep_fraction}) must be in (0, 1]')


@dataclass(frozen=True)
class EpisodeScores:
    """Per-episode (E,) arrays: reward, advantage and regression weight, plus each task's S_base."""

    reward: np.ndarray
    advantage: np.ndarray
    weight: np.ndarray
    step_budget: dict[str, float]


def _check(tasks, success, steps, acceptance_ratio) -> tuple[np.ndarray, ...]:
    tasks = np.asarray(tasks, dtype=object)
    success = np.asarray(success, dtype=bool)
    steps = np.asarray(steps, dtype=np.float64)
    gamma = np.asarray(acceptance_ratio, dtype=np.float64)
    if tasks.ndim != 1 or len(tasks) == 0:
        raise ValueError(f'scores need a non-empty (E,) array of tasks; got shape {tasks.shape}')
    for name, array in (('success', success), ('steps', steps), ('acceptance_ratio', gamma)):
        if array.shape != tasks.shape:
            raise ValueError(f'{name} has shape {array.shape}; expected {tasks.shape} (one per episode)')
    if (steps[success] < 1).any():
        raise ValueError('a successful episode has fewer than 1 step')
    return tasks, success, steps, gamma


def episode_scores(tasks, success, steps, acceptance_ratio, config: OfflineRewardConfig = OfflineRewardConfig(),
                   seeds=None) -> EpisodeScores:
    """Rewards, advantages and weights of E recorded episodes (see the module docstring).

    tasks: (E,) task names; success: (E,) bool; steps: (E,) control steps (the step of first
    success for a successful episode); acceptance_ratio: (E,) gamma = mean h / H in (0, 1];
    seeds: (E,) episode seeds, needed with ``group_by: seed`` (then a group is a task's episodes
    from one seed, e.g. the same initial state run at several h).
    """
    tasks, success, steps, gamma = _check(tasks, success, steps, acceptance_ratio)
    keys = tasks
    if config.group_by == 'seed':
        seeds = np.asarray(seeds if seeds is not None else [], dtype=np.int64)
        if seeds.shape != tasks.shape or (seeds < 0).any():
            raise ValueError(f'group_by seed needs a known seed (>= 0) per episode; got {seeds.tolist()[:5]}...: '
                             'bags recorded on a robot have none (use group_by: task)')
        keys = np.array([f'{t}/{s}' for t, s in zip(tasks, seeds)], dtype=object)
    budgets = {task: float(config.step_budget_alpha * steps[(tasks == task) & success].mean())
               for task in sorted(set(tasks[success].tolist()))} if config.reward == 'steps' else {}
    reward = np.zeros(len(tasks))
    advantage = np.zeros(len(tasks))
    weight = np.zeros(len(tasks))
    for key in sorted(set(keys.tolist())):
        group = np.flatnonzero(keys == key)
        ok = success[group]
        if config.reward == 'success':
            r = ok.astype(np.float64)
        elif config.reward == 'extension':
            r = extension_rewards(ok, gamma[group], config.extension)
        else:   # all 0 without a success
            r = step_rewards(ok, steps[group], budgets.get(tasks[group[0]], 1.0), config.step)
        reward[group] = r
        std = r.std()
        a = (r - r.mean()) / (std + config.advantage_eps) if std > 0 else np.zeros(len(r))
        advantage[group] = a
        if ok.mean() < config.min_success_rate or not ok.any():
            weight[group] = 0.0
        elif config.weighting == 'awr':
            weight[group] = np.minimum(np.exp(a / config.temperature), config.max_weight)
        else:
            kept = np.sort(r[ok])[::-1][:max(1, math.ceil(config.keep_fraction * ok.sum()))]
            weight[group] = (ok & (r >= kept[-1])).astype(np.float64)
    return EpisodeScores(reward, advantage, weight, budgets)
