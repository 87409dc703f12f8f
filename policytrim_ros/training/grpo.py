"""The GRPO policy-gradient loss: PPO-clip on the log-probability of each executed window.

One sample is one inference call of one rollout: the chunk's log-density summed over the h actions
that were executed (not the whole predicted chunk), re-computed under the current policy from the
plan-time observation, with its trajectory's group advantage. Diagnostics keep CleanRL's names.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ClipLoss:
    """The loss and its diagnostics for one minibatch (all scalars)."""

    loss: torch.Tensor
    pg_loss: torch.Tensor
    kl: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor


def ppo_clip_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor,
                  weight: torch.Tensor | None = None, clip: float = 0.2,
                  ref_log_prob: torch.Tensor | None = None, kl_coef: float = 0.0) -> ClipLoss:
    """PPO-clip loss over N executed windows, each (N,).

    log_prob: log-density of the executed actions under the policy being trained.
    old_log_prob: the same under the policy that collected the rollouts (no gradient).
    advantage: the group advantage of each window's trajectory.
    weight: per-window loss weight (None = equal); 1 / (calls in its trajectory) makes every
        trajectory count equally whatever its length (GRPO's per-sequence mean).
    ref_log_prob: log-density under the frozen reference policy, for the optional KL term
        ``kl_coef * KL(pi || pi_ref)`` (k3 estimator, as GRPO); ignored when kl_coef is 0.
    """
    if not clip > 0:
        raise ValueError(f'clip ({clip}) must be > 0')
    weight = torch.ones_like(log_prob) if weight is None else weight
    weight = weight / weight.sum()
    log_ratio = log_prob - old_log_prob.detach()
    ratio = log_ratio.exp()
    surrogate = torch.minimum(ratio * advantage, ratio.clamp(1.0 - clip, 1.0 + clip) * advantage)
    pg_loss = -(weight * surrogate).sum()
    kl = torch.zeros((), dtype=log_prob.dtype)
    if kl_coef:
        if ref_log_prob is None:
            raise ValueError('kl_coef > 0 needs ref_log_prob')
        log_ref_ratio = ref_log_prob.detach() - log_prob
        kl = (weight * (log_ref_ratio.exp() - 1.0 - log_ref_ratio)).sum()
    with torch.no_grad():
        approx_kl = (weight * ((ratio - 1.0) - log_ratio)).sum()
        clip_fraction = (weight * ((ratio - 1.0).abs() > clip).to(weight.dtype)).sum()
    return ClipLoss(pg_loss + kl_coef * kl, pg_loss, kl, approx_kl, clip_fraction)
