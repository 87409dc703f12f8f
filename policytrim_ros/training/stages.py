"""The plan of PolicyTrim's two stages: which h each rollout runs, and what Stage 2 starts from.

Stage 1 cycles the acceptance ratios Gamma over the members of every group, so every value is
present in every group (the reference code assigns env k the entry k mod M). Between the stages,
the largest h whose success rate stays within a tolerance of the baseline's is carried into
Stage 2 (one h, or with ``per_task`` one h per task), with the step budget S_base = alpha * (mean
successful steps at that h).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from policytrim_ros.training.workers import RolloutJob


def acceptance_ratios(base_n_action_steps: int, chunk_size: int, count: int = 3) -> tuple[float, ...]:
    """Gamma: ``count`` ratios evenly spaced from the model's own h / H up to 1 (paper default M = 3).

    >>> acceptance_ratios(4, 16)
    (0.25, 0.625, 1.0)
    """
    if not 1 <= base_n_action_steps <= chunk_size:
        raise ValueError(f'base_n_action_steps ({base_n_action_steps}) must be in [1, chunk_size ({chunk_size})]')
    if count < 1:
        raise ValueError(f'count ({count}) must be >= 1')
    first = base_n_action_steps / chunk_size
    if count == 1:
        return (first,)
    return tuple(float(x) for x in np.linspace(first, 1.0, count))


def acceptance_horizons(ratios: Sequence[float], chunk_size: int) -> tuple[int, ...]:
    """h_i = floor(gamma_i * H) for each ratio (each in (0, 1], and giving h >= 1)."""
    horizons = []
    for gamma in ratios:
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f'acceptance ratio {gamma} must be in (0, 1]')
        h = math.floor(gamma * chunk_size + 1e-9)   # 0.625 * 16 is 10, not 9.999...
        if h < 1:
            raise ValueError(f'acceptance ratio {gamma} gives h = 0 for chunk_size {chunk_size}')
        horizons.append(h)
    return tuple(horizons)


def group_jobs(task: str, seed: int, horizons: Sequence[int], group_size: int, noise_seed: int) -> list[RolloutJob]:
    """The G rollouts of one group: one task and initial-state seed, h cycled over ``horizons``.

    Member k runs horizons[k mod M] with exploration noise seed ``noise_seed + k``. Every h is
    present when group_size >= M (ValueError otherwise).
    """
    if group_size < len(horizons):
        raise ValueError(f'group_size ({group_size}) must be >= the number of horizons ({len(horizons)}) so '
                         'that every h is present in every group')
    return [RolloutJob(task, seed, horizons[k % len(horizons)], noise_seed + k, f'{task}-{seed}-g{k}')
            for k in range(group_size)]


def stage2_horizon(success_rate_by_h: Mapping[int, float], baseline_success_rate: float,
                   tolerance: float = 0.02, task_success_rates_by_h: Mapping[int, Mapping[str, float]] | None = None,
                   baseline_task_success_rates: Mapping[str, float] | None = None,
                   task_tolerance: float | None = None) -> int:
    """The largest h whose SR is at least ``baseline_success_rate - tolerance``.

    success_rate_by_h: the between-stage sweep, {h: pooled SR}. With ``task_tolerance``, an h also
    needs every task's SR (``task_success_rates_by_h[h][task]``) to be at least the baseline's on
    that task (``baseline_task_success_rates``) minus ``task_tolerance``: the pooled rule alone
    lets one task lose what the others gain. ValueError when no h qualifies.
    """
    qualified = [h for h, sr in success_rate_by_h.items() if sr >= baseline_success_rate - tolerance - 1e-12]
    if task_tolerance is not None:
        if task_success_rates_by_h is None or baseline_task_success_rates is None:
            raise ValueError('task_tolerance needs the per-task success rates of the sweep and the baseline')
        qualified = [h for h in qualified
                     if all(task_success_rates_by_h[h][task] >= base - task_tolerance - 1e-12
                            for task, base in baseline_task_success_rates.items())]
    if not qualified:
        guard = '' if task_tolerance is None else f' (and every task within {task_tolerance} of its own)'
        raise ValueError(f'no h of the sweep {dict(success_rate_by_h)} keeps SR within {tolerance} of the '
                         f'baseline {baseline_success_rate}{guard}')
    return max(qualified)


def task_stage2_horizons(task_success_rates_by_h: Mapping[int, Mapping[str, float]],
                         baseline_task_success_rates: Mapping[str, float], tolerance: float) -> dict[str, int]:
    """{task: h}: per task, the largest h whose SR on the task is at least the baseline's on it minus
    ``tolerance``; a task no h keeps there gets the h with its best SR (the larger on a tie).

    The pooled rule gives every task one h, so a task whose SR falls at long windows loses what the
    others gain (push-v3 at h = 16: docs/experiments.md). The task is known at deployment (it is
    the instruction), so its h can be too.
    """
    chosen = {}
    for task, base in baseline_task_success_rates.items():
        rates = {h: by_task[task] for h, by_task in task_success_rates_by_h.items()}
        qualified = [h for h, sr in rates.items() if sr >= base - tolerance - 1e-12]
        chosen[task] = max(qualified) if qualified else max(rates, key=lambda h: (rates[h], h))
    return chosen


def step_budget(successful_steps: Sequence[float], alpha: float = 1.3) -> float:
    """S_base = alpha * mean steps of the successful episodes of the policy entering Stage 2."""
    steps = np.asarray(successful_steps, dtype=np.float64)
    if steps.size == 0:
        raise ValueError('the step budget needs at least one successful episode')
    if not alpha > 0:
        raise ValueError(f'alpha ({alpha}) must be > 0')
    return float(alpha * steps.mean())


SELECTION_SEED = 50_000
"""First initial-state seed of the between-stage sweep."""


@dataclass(frozen=True)
class SelectionConfig:
    """The between-stage sweep.

    episodes: episodes per task and h (the baseline at its h, the Stage 1 policy at each h of Gamma).
    tolerance: largest drop of the pooled success rate below the baseline's that still qualifies an h.
    task_tolerance: if set, also the largest drop of any one task's success rate below the
        baseline's on that task (None: the pooled rule only, as the paper). Per-task rates over
        ``episodes`` are noisy (+-7 points at 50 episodes and SR 0.7), so set it wider than
        ``tolerance`` and raise ``episodes``.
    per_task: choose h per task (``task_stage2_horizons``): the largest h keeping that task within
        ``task_tolerance`` (``tolerance`` if null) of the baseline's SR on it; the pooled
        ``tolerance`` then constrains nothing. Stage 2 runs each task at its own h; the checkpoint
        records them (``task_n_action_steps``), which ``bench/efficiency.py`` reads; deploy and
        ``policytrim eval`` a task with its h (``execution.n_action_steps``, ``--n-action-steps``).
    alpha: S_base = alpha * mean successful steps at the chosen h (paper 1.3).
    seed: first initial-state seed of each task.
    """

    episodes: int = 50
    tolerance: float = 0.02
    task_tolerance: float | None = None
    per_task: bool = False
    alpha: float = 1.3
    seed: int = SELECTION_SEED

    def __post_init__(self):
        if self.episodes < 1:
            raise ValueError(f'selection.episodes ({self.episodes}) must be >= 1')
        if not 0.0 <= self.tolerance < 1.0:
            raise ValueError(f'selection.tolerance ({self.tolerance}) must be in [0, 1)')
        if self.task_tolerance is not None and not 0.0 <= self.task_tolerance < 1.0:
            raise ValueError(f'selection.task_tolerance ({self.task_tolerance}) must be in [0, 1) or null')
        if not self.alpha > 0:
            raise ValueError(f'selection.alpha ({self.alpha}) must be > 0')
