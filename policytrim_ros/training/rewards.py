"""PolicyTrim's trajectory rewards and GRPO group advantages (DESIGN.md section 2).

A group is G rollouts from one initial state and instruction. Every function here takes the
group's per-trajectory arrays, shape (G,), and returns (G,) floats; failed trajectories always get
reward 0. Paper equations and the reference code (RLinf ``calculate_scores``) disagree in a few
places; each disagreement is a config switch here, defaulting to the paper (the digest's section 8).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FLOOR_MODES = ('floor', 'gate')


@dataclass(frozen=True)
class ExtensionRewardConfig:
    """Stage 1, reliable chunk extension: R = success * (1 + beta * gamma).

    beta: weight of the horizon bonus for a successful trajectory executed with acceptance ratio
        gamma = h / H (paper Eq. 2; RLinf plan_coef = 1.0).
    """

    beta: float = 1.0

    def __post_init__(self):
        if not (math.isfinite(self.beta) and self.beta >= 0.0):
            raise ValueError(f'beta ({self.beta}) must be finite and >= 0')


@dataclass(frozen=True)
class StepRewardConfig:
    """Stage 2, redundancy-aware step reduction (paper Eqs. 5-7), h fixed.

    R = success * (1 + step_weight * max(0, S_base - S) / S_base
                     - stability_weight * tanh(|S - mu| / max(sigma, sigma_floor)))
    with mu, sigma the mean and population std of S over the group's successful members.

    step_weight: weight of the step-saving term (paper/code 0.8).
    stability_weight: lambda of the group-anchored stability penalty (0.15: paper Table 12 and
        the code's YAML defaults; the paper's appendix and run scripts say 0.2).
    sigma_floor: floor of the group's step spread (steps; code 5.0, paper unstated).
    floor_mode: 'floor' divides by max(sigma, sigma_floor), as the paper writes it; 'gate' applies
        no penalty at all while sigma < sigma_floor and divides by sigma otherwise, as the code does.
    """

    step_weight: float = 0.8
    stability_weight: float = 0.15
    sigma_floor: float = 5.0
    floor_mode: str = 'floor'

    def __post_init__(self):
        for name in ('step_weight', 'stability_weight'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f'{name} ({value}) must be finite and >= 0')
        if not (math.isfinite(self.sigma_floor) and self.sigma_floor > 0.0):
            raise ValueError(f'sigma_floor ({self.sigma_floor}) must be finite and > 0 (steps)')
        if self.floor_mode not in FLOOR_MODES:
            raise ValueError(f"floor_mode '{self.floor_mode}' must be one of {list(FLOOR_MODES)}")


def _group(success, *arrays) -> tuple[np.ndarray, ...]:
    success = np.asarray(success, dtype=bool)
    if success.ndim != 1 or len(success) == 0:
        raise ValueError(f'a group is a non-empty (G,) array; got shape {success.shape}')
    out = [success]
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        if a.shape != success.shape:
            raise ValueError(f'group arrays must share the shape {success.shape}; got {a.shape}')
        out.append(a)
    return tuple(out)


def extension_rewards(success, acceptance_ratio, config: ExtensionRewardConfig = ExtensionRewardConfig()
                      ) -> np.ndarray:
    """(G,) Stage 1 rewards: success (G,) bool, acceptance_ratio (G,) gamma = h / H in (0, 1]."""
    success, gamma = _group(success, acceptance_ratio)
    if ((gamma <= 0) | (gamma > 1)).any():
        raise ValueError(f'acceptance ratios must lie in (0, 1]; got {gamma.tolist()}')
    return np.where(success, 1.0 + config.beta * gamma, 0.0)


def step_rewards(success, steps, step_budget: float, config: StepRewardConfig = StepRewardConfig()) -> np.ndarray:
    """(G,) Stage 2 rewards: success (G,) bool, steps (G,) S (the step of first success).

    step_budget: S_base = alpha * mean successful steps of the policy entering Stage 2 (> 0).
    Steps of failed members are ignored (they may be anything, e.g. the step limit).
    """
    success, steps = _group(success, steps)
    if not (math.isfinite(step_budget) and step_budget > 0):
        raise ValueError(f'step_budget ({step_budget}) must be finite and > 0 (steps)')
    if not success.any():
        return np.zeros(len(success))
    ok = steps[success]
    mu, sigma = ok.mean(), ok.std()          # population std over the successful members
    saving = np.maximum(0.0, step_budget - steps) / step_budget
    if config.floor_mode == 'floor':
        penalty = np.tanh(np.abs(steps - mu) / max(sigma, config.sigma_floor))
    elif sigma >= config.sigma_floor:
        penalty = np.tanh(np.abs(steps - mu) / sigma)
    else:
        penalty = np.zeros(len(steps))
    reward = 1.0 + config.step_weight * saving - config.stability_weight * penalty
    return np.where(success, reward, 0.0)


def group_advantages(rewards, eps: float = 1e-6) -> np.ndarray:
    """(G,) GRPO advantages (R - mean) / (std + eps), std unbiased as in the reference code.

    A group whose rewards are all equal gets zero advantages (no signal, no update).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 1 or len(rewards) < 2:
        raise ValueError(f'advantages need a (G,) group with G >= 2; got shape {rewards.shape}')
    return (rewards - rewards.mean()) / (rewards.std(ddof=1) + eps)


def group_kept(success, min_success_rate: float = 0.1) -> bool:
    """Whether a group enters the loss: its success rate is at least ``min_success_rate``.

    All-success groups are kept: the horizon and step terms still rank their members.
    """
    (success,) = _group(success)
    return bool(success.mean() >= min_success_rate)
