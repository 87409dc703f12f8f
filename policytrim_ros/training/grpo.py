"""GRPO: the PPO-clip loss on the log-probability of each executed window, and one update step.

One sample is one inference call of one rollout: the chunk's log-density summed over the h actions
that were executed (not the whole predicted chunk), re-computed under the current policy from the
plan-time observation, with its trajectory's group advantage; or, with ``log_ratio: mean``, that
log-density divided by the window's executed action dimensions (h x A), so one clip range bounds an
h = 32 window as tightly as an h = 4 one (GSPO's length normalisation). Diagnostics keep CleanRL's
names.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from policytrim_ros.training.exploration import ChunkNoise


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
                  ref_log_prob: torch.Tensor | None = None, kl_coef: float = 0.0,
                  dims: torch.Tensor | None = None, window_kl: torch.Tensor | None = None) -> ClipLoss:
    """PPO-clip loss over N executed windows, each (N,).

    log_prob: log-density of the executed actions under the policy being trained.
    old_log_prob: the same under the policy that collected the rollouts (no gradient).
    advantage: the group advantage of each window's trajectory.
    weight: per-window loss weight (None = equal); 1 / (calls in its trajectory) makes every
        trajectory count equally whatever its length (GRPO's per-sequence mean).
    ref_log_prob: log-density under the frozen reference policy, for the optional KL term
        ``kl_coef * KL(pi || pi_ref)`` (k3 estimator, as GRPO); ignored when kl_coef is 0.
    window_kl: instead of ref_log_prob, each window's KL(pi || pi_ref) itself (e.g. in closed form,
        ``ChunkNoise.kl``), summed over its dimensions like a log-density.
    dims: executed action dimensions of each window (h x A; ``ChunkNoise.dims`` x A); given, every
        log-density is divided by them first, so ratio and KL are per dimension (``GRPOConfig.log_ratio: mean``).
    """
    if not clip > 0:
        raise ValueError(f'clip ({clip}) must be > 0')
    weight = torch.ones_like(log_prob) if weight is None else weight
    weight = weight / weight.sum()
    if dims is not None:
        log_prob, old_log_prob = log_prob / dims, old_log_prob / dims
        ref_log_prob = None if ref_log_prob is None else ref_log_prob / dims
        window_kl = None if window_kl is None else window_kl / dims
    log_ratio = log_prob - old_log_prob.detach()
    ratio = log_ratio.exp()
    surrogate = torch.minimum(ratio * advantage, ratio.clamp(1.0 - clip, 1.0 + clip) * advantage)
    pg_loss = -(weight * surrogate).sum()
    kl = torch.zeros((), dtype=log_prob.dtype)
    if kl_coef and window_kl is not None:
        kl = (weight * window_kl).sum()
    elif kl_coef:
        if ref_log_prob is None:
            raise ValueError('kl_coef > 0 needs ref_log_prob or window_kl')
        log_ref_ratio = ref_log_prob.detach() - log_prob
        kl = (weight * (log_ref_ratio.exp() - 1.0 - log_ref_ratio)).sum()
    with torch.no_grad():
        approx_kl = (weight * ((ratio - 1.0) - log_ratio)).sum()
        clip_fraction = (weight * ((ratio - 1.0).abs() > clip).to(weight.dtype)).sum()
    return ClipLoss(pg_loss + kl_coef * kl, pg_loss, kl, approx_kl, clip_fraction)


@dataclass(frozen=True)
class GRPOConfig:
    """One GRPO update from a batch of groups.

    clip: PPO clip range epsilon (paper/code 0.2).
    epochs: passes over the batch's windows per update (the reference code: 1).
    minibatch_size: windows per gradient step.
    grad_clip: max global gradient norm (1.0, as the code).
    kl_coef: weight of KL(pi || pi_ref) to the frozen reference (code and default: 0, off).
    kl_estimator: 'k3' (GRPO's: exp(r) - 1 - r of the sampled windows' log-ratio r) or 'exact'
        (ours: the closed-form KL between the two Gaussians at each window's plan-time input, over
        the same executed steps). k3 is unbiased but its gradient is noise once the policies
        are apart (r is then mostly far below 0): on an H = 32 model, KL per action dimension
        grew from 0.001 to 3 in 12 iterations at kl_coef 0.3. The exact KL pulls every mean back
        in proportion to its distance.
    min_group_success_rate: groups below this success rate are left out of the loss (10 %).
    log_ratio: 'sum' (the paper's code): a window's ratio is that of its executed actions' joint
        density, so a change of d nats per action dimension moves an h-step window's ratio by
        exp(h x A x d) and long windows leave the clip range first (Stage 1 on an H = 32 model:
        clip fraction 0.40 at the first update); 'mean': exp(the mean log-ratio per executed
        action dimension), the same clip range for every h; the KL term uses the same per-dimension
        log-densities.
    credit_refused: also put the chunk the safety checks refused (it ended its rollout with
        reward 0) in the loss, over the targets the check read, with its rollout's advantage.
        Off (the paper has no safety layer, and the shipped runs predate it): those chunks are
        censored, so nothing pushes the policy's samples away from the velocity and position
        limits (Stage 1 on an H = 32 model drifted into them).
    """

    clip: float = 0.2
    epochs: int = 1
    minibatch_size: int = 64
    grad_clip: float = 1.0
    kl_coef: float = 0.0
    min_group_success_rate: float = 0.1
    log_ratio: str = 'sum'
    credit_refused: bool = False
    kl_estimator: str = 'k3'

    def __post_init__(self):
        if self.log_ratio not in ('sum', 'mean'):
            raise ValueError(f"log_ratio ({self.log_ratio!r}) must be 'sum' or 'mean'")
        if self.kl_estimator not in ('k3', 'exact'):
            raise ValueError(f"kl_estimator ({self.kl_estimator!r}) must be 'k3' or 'exact'")
        for name in ('epochs', 'minibatch_size'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} ({getattr(self, name)}) must be >= 1')
        if not 0.0 < self.clip < 1.0:
            raise ValueError(f'clip ({self.clip}) must be in (0, 1)')
        if not (self.grad_clip > 0 and self.kl_coef >= 0 and 0.0 <= self.min_group_success_rate <= 1.0):
            raise ValueError(f'grad_clip ({self.grad_clip}) must be > 0, kl_coef ({self.kl_coef}) >= 0 and '
                             f'min_group_success_rate ({self.min_group_success_rate}) in [0, 1]')


def credited_windows(groups, min_success_rate: float, encode, credit_refused: bool = False
             ) -> tuple[dict[str, torch.Tensor], int]:
    """Stack the credited windows of the kept groups: inputs, chunks, masks, advantages, weights."""
    from policytrim_ros.training.rewards import group_advantages, group_kept
    parts: dict[str, list] = {k: [] for k in ('image', 'text', 'state', 'chunk', 'mask', 'advantage', 'weight')}
    kept = 0
    for rollouts, rewards in groups:
        if not group_kept([r.metrics.success for r in rollouts], min_success_rate):
            continue
        kept += 1
        for rollout, advantage in zip(rollouts, group_advantages(rewards)):
            mask = rollout.credited_mask(credit_refused)
            rows = mask.any(1)   # a refused chunk, uncredited, has nothing to sum over
            calls = int(rows.sum())
            if calls == 0 or advantage == 0.0:
                continue
            parts['image'].append(rollout.images[rows])
            parts['text'].append(np.repeat(encode(rollout.instruction)[None], calls, axis=0))
            parts['state'].append(rollout.states[rows])
            parts['chunk'].append(rollout.chunks[rows])
            parts['mask'].append(mask[rows])
            parts['advantage'].append(np.full(calls, advantage, np.float32))
            parts['weight'].append(np.full(calls, 1.0 / calls, np.float32))   # each trajectory counts once
    if not parts['image']:
        return {}, kept
    return {k: torch.from_numpy(np.concatenate(v)) for k, v in parts.items()}, kept


def grpo_update(model, optimizer: torch.optim.Optimizer, groups, config: GRPOConfig = GRPOConfig(),
                reference=None, encode=None, generator: torch.Generator | None = None,
                noise: ChunkNoise | None = None) -> dict[str, float]:
    """One GRPO update of ``model`` (a ``VLAModel``) from ``groups``; returns the diagnostics.

    groups: [(rollouts, rewards (G,))], the rollouts of one group (``training.rollout.Rollout``)
        with their trajectory rewards. Old log-probabilities are those of ``model`` as it is on
        entry (the policy that collected the rollouts).
    reference: the frozen reference model for the KL term (needed when kl_coef > 0).
    encode: instruction -> (384,) embedding (default: the shared MiniLM encoder).
    noise: the exploration noise the rollouts were drawn with (default iid), whose density and KL
        the loss uses.
    Diagnostics: groups_kept (fraction), windows, pg_loss, approx_kl, clip_fraction, kl (means
    over gradient steps; zeros when no group carried signal).
    """
    if encode is None:
        from policytrim_ros.policy.vla.instruction import shared_encoder
        encode = shared_encoder().encode
    noise = noise or ChunkNoise()
    data, kept = credited_windows(groups, config.min_group_success_rate, encode, config.credit_refused)
    stats = {'groups_kept': kept / max(1, len(groups)), 'windows': float(len(data.get('chunk', ())))}
    names = ('pg_loss', 'approx_kl', 'clip_fraction', 'kl')
    if not data:
        return {**stats, **{k: 0.0 for k in names}}

    dims = noise.dims(data['mask']) * data['chunk'].shape[-1] if config.log_ratio == 'mean' else None

    def inputs(idx):
        return data['image'][idx], data['text'][idx], data['state'][idx]

    n = len(data['chunk'])
    batches = [torch.arange(i, min(i + config.minibatch_size, n)) for i in range(0, n, config.minibatch_size)]
    exact = config.kl_coef and config.kl_estimator == 'exact'
    with torch.no_grad():
        def log_prob(policy, idx):
            return noise.log_prob(policy, policy(*inputs(idx)), data['chunk'][idx], data['mask'][idx])

        old = torch.cat([log_prob(model, idx) for idx in batches])
        ref = ref_mean = None
        if exact:
            ref_mean = torch.cat([reference(*inputs(idx)) for idx in batches])
        elif config.kl_coef:
            ref = torch.cat([log_prob(reference, idx) for idx in batches])
    totals = dict.fromkeys(names, 0.0)
    step_count = 0
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, config.minibatch_size):
            idx = order[i:i + config.minibatch_size]
            mean = model(*inputs(idx))
            new = noise.log_prob(model, mean, data['chunk'][idx], data['mask'][idx])
            window_kl = noise.kl(model, mean, reference, ref_mean[idx], data['mask'][idx]) if exact else None
            out = ppo_clip_loss(new, old[idx], data['advantage'][idx], data['weight'][idx],
                                config.clip, None if ref is None else ref[idx], config.kl_coef,
                                None if dims is None else dims[idx], window_kl)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            step_count += 1
            for k in names:
                totals[k] += getattr(out, k).detach().item()
    return {**stats, **{k: v / step_count for k, v in totals.items()}}
