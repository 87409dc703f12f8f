"""The efficiency head's RL pieces: rollouts that sample h per call, decision groups, the loss.

The VLA is frozen: every chunk is its mean (what evaluation and deployment run), and the only
random decision of a rollout is each call's executed length h ~ Categorical(head(features)). So a
rollout keeps, per call, the head's input features (``VLAModel.plan``) and the index of the h it
drew, and the update re-runs only the head on them.

Groups are formed at a decision, not at the initial state: a trunk rollout of the current head is
replayed up to one of its calls (same initial state, same choices: the env and the mean chunks
are deterministic), where each branch executes another h of the set, and continues with the
head's most likely h (as deployed; so a branch's return has no sampling noise).
The branches' group-relative advantages then belong to that one decision (VinePPO's Monte Carlo
branching), where a group of whole episodes spreads each trajectory's advantage over all its
calls: measured on the arm, that drove every call to the longest h, grasps included
(docs/experiments.md, section 2.8).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from policytrim_ros.execution.config import ExecutionConfig, SafetyConfig
from policytrim_ros.execution.episode import run_episode
from policytrim_ros.execution.executor import ChunkRecord
from policytrim_ros.execution.metrics import EpisodeMetrics
from policytrim_ros.policy.base import Observation
from policytrim_ros.policy.torch_policy import vla_inputs, vla_metadata
from policytrim_ros.policy.vla.instruction import InstructionEncoder, shared_encoder
from policytrim_ros.policy.vla.modeling_vla import HorizonHead, VLAModel
from policytrim_ros.training.grpo import ppo_clip_loss
from policytrim_ros.training.rewards import group_advantages

if TYPE_CHECKING:
    from policytrim_ros.envs.arm import ArmEnv
    from policytrim_ros.envs.metaworld import MetaWorldEnv

REWARDS = ('calls', 'extension')


class HorizonSamplingPolicy:
    """``HorizonPolicy`` that runs the frozen VLA's mean chunk and samples h from its efficiency head.

    generator: the torch generator of the h draws (seed it per rollout for replays).
    forced: indices into ``config.horizons`` of the first calls' h (a replayed prefix and a
        branch), drawn from the head after them.
    greedy: after the forced calls, take the head's most likely h instead of drawing one (a branch's
        continuation: what deployment runs, and no sampling noise in the branch's return).
    After an episode, ``features`` (C, F) and ``choices`` (C,) hold the C calls' head inputs and
    drawn indices into ``config.horizons``.
    """

    def __init__(self, model: VLAModel, generator: torch.Generator, encoder: InstructionEncoder | None = None,
                 forced: tuple[int, ...] = (), greedy: bool = False):
        if model.horizon_head is None:
            raise ValueError('the model has no efficiency head: VLAModel.with_horizon_head adds one')
        self.model = model
        self.config = model.config
        self.metadata = vla_metadata('torch-horizon-sampling', self.config)
        self.encoder = encoder or shared_encoder()
        self.generator = generator
        if any(not 0 <= c < len(self.config.horizons) for c in forced):
            raise ValueError(f'forced choices {list(forced)} must index the horizons {list(self.config.horizons)}')
        self.forced = tuple(forced)
        self.greedy = greedy
        self.reset()

    def reset(self) -> None:
        """Forget the recorded calls (a new episode)."""
        self.features: list[np.ndarray] = []
        self.choices: list[int] = []

    def predict_action_chunk(self, observation: Observation) -> np.ndarray:
        """(H, A) float64 mean chunk (the h drawn with it is ``predict_chunk_and_horizon``'s)."""
        return self.predict_chunk_and_horizon(observation)[0]

    def predict_chunk_and_horizon(self, observation: Observation) -> tuple[np.ndarray, int]:
        """((H, A) float64 mean chunk, h: forced, or drawn from the head's categorical)."""
        inputs = self.encode(observation)
        with torch.inference_mode():
            return self.decide(observation, inputs, self.forward(*(torch.from_numpy(x) for x in inputs)))

    # The call in three parts, as SamplingVLAPolicy's (a lockstep driver batches the forward).

    def encode(self, observation: Observation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batch-of-one model inputs (``vla_inputs``); raises PolicyInputError."""
        return vla_inputs(observation, self.config, self.encoder)

    def forward(self, image: torch.Tensor, text: torch.Tensor,
                state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (B, H, A), features (B, F)) of a batch of ``encode`` outputs (``VLAModel.plan``)."""
        return self.model.plan(image, text, state)

    def decide(self, observation: Observation, inputs: tuple[np.ndarray, ...],
               outputs: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, int]:
        """The call from its rows (batch of one) of ``forward``'s outputs: ((H, A) float64 mean chunk,
        h: forced, or the head's (run on this row alone) most likely or drawn from this policy's
        generator)."""
        mean, features = outputs
        if len(self.choices) < len(self.forced):
            choice = self.forced[len(self.choices)]
        elif self.greedy:
            choice = int(self.model.horizon_logits(features)[0].argmax())
        else:
            probs = self.model.horizon_logits(features)[0].softmax(-1)
            choice = int(torch.multinomial(probs, 1, generator=self.generator))
        self.features.append(features[0].numpy())
        self.choices.append(choice)
        return mean[0].numpy().astype(np.float64), self.config.horizons[choice]


@dataclass(frozen=True)
class HorizonRollout:
    """One episode with sampled h.

    metrics: its outcome. features: (C, F) float32 head inputs of the C dispatched calls.
    choices: (C,) int64 index of each call's h in the model's horizons.
    """

    metrics: EpisodeMetrics
    features: np.ndarray
    choices: np.ndarray


def collect_horizon_rollout(env: ArmEnv | MetaWorldEnv, policy: HorizonSamplingPolicy, config: ExecutionConfig,
                            task: str, seed: int, safety: SafetyConfig | None = None,
                            episode_id: str = '') -> HorizonRollout:
    """Run one episode of ``task`` from ``seed`` with ``config.horizon`` learned (its n_action_steps
    the longest window) and keep each dispatched call's features and choice. A call whose chunk the
    safety checks refused is not kept: its h did not run."""
    if config.horizon != 'learned':
        raise ValueError(f"horizon rollouts need execution horizon 'learned', not '{config.horizon}'")
    metrics, records = run_episode(env, policy, config, task, seed, episode_id=episode_id, safety=safety)
    return finish_horizon_rollout(policy, metrics, records)


def finish_horizon_rollout(policy: HorizonSamplingPolicy, metrics: EpisodeMetrics,
                           records: list[ChunkRecord]) -> HorizonRollout:
    """The ``HorizonRollout`` of an episode that ``policy`` played (``play_episode``'s metrics and
    records)."""
    calls = len(records)
    width = HorizonHead.input_size(policy.config)
    features = np.stack(policy.features[:calls]) if calls else np.zeros((0, width), np.float32)
    return HorizonRollout(metrics, features, np.asarray(policy.choices[:calls], dtype=np.int64))


@dataclass(frozen=True)
class HorizonRewardConfig:
    """The trajectory reward of a learned-h rollout; failures get 0.

    kind: 'calls', R = success x max(0, 1 - call_cost x inference calls): a call saved is worth
        call_cost of a success, so the head trades calls for success at that rate; or 'extension',
        Stage 1's R = success x (1 + beta x mean executed h / H).
    call_cost: the price of one inference call, in successes (kind calls).
    beta: weight of the horizon bonus (kind extension).
    """

    kind: str = 'calls'
    call_cost: float = 0.01
    beta: float = 1.0

    def __post_init__(self):
        if self.kind not in REWARDS:
            raise ValueError(f"kind '{self.kind}' must be one of {list(REWARDS)}")
        for name in ('call_cost', 'beta'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f'{name} ({value}) must be finite and >= 0')


def horizon_rewards(rollouts: list[HorizonRollout], config: HorizonRewardConfig) -> np.ndarray:
    """(G,) rewards of one group's rollouts."""
    success = np.array([r.metrics.success for r in rollouts], dtype=bool)
    if config.kind == 'calls':
        calls = np.array([r.metrics.inference_calls for r in rollouts], dtype=np.float64)
        return np.where(success, np.maximum(0.0, 1.0 - config.call_cost * calls), 0.0)
    gamma = np.array([r.metrics.chunk_utilization for r in rollouts], dtype=np.float64)
    return np.where(success, 1.0 + config.beta * gamma, 0.0)


def branch_choices(trunk: HorizonRollout, index: int, count: int) -> list[tuple[int, ...]]:
    """The forced choices of the ``count`` branches at call ``index`` of ``trunk``: its own choices
    before that call, then each h of the head's set in turn."""
    if not 0 <= index < len(trunk.choices):
        raise ValueError(f'call {index} is not a call of the trunk ({len(trunk.choices)} calls)')
    prefix = tuple(int(c) for c in trunk.choices[:index])
    return [prefix + (a,) for a in range(count)]


@dataclass(frozen=True)
class DecisionGroup:
    """One decision and its branches: features (F,) of the call (the same in every branch: they
    share the prefix), and rewards (K,) of the branch that executed each h of the set there."""

    features: np.ndarray
    rewards: np.ndarray


ADVANTAGES = ('centered', 'normalized')


def decision_batch(groups: list[DecisionGroup], advantage: str = 'centered') -> dict[str, torch.Tensor]:
    """Stack the groups that carry signal (not all rewards equal): features (N, F) and group
    advantages (N, K) over each group's K branches: R - mean ('centered', Dr. GRPO's), or
    (R - mean) / (std + eps) ('normalized', GRPO's)."""
    kept = [g for g in groups if np.ptp(g.rewards) > 0]
    if not kept:
        return {}
    if advantage == 'normalized':
        advantages = [group_advantages(g.rewards) for g in kept]
    else:
        advantages = [g.rewards - g.rewards.mean() for g in kept]
    return {'features': torch.from_numpy(np.stack([g.features for g in kept]).astype(np.float32)),
            'advantage': torch.from_numpy(np.stack(advantages).astype(np.float32))}


def head_log_probs(model: VLAModel, features: torch.Tensor) -> torch.Tensor:
    """(N, K) log-probability of every h of the set at each of N calls."""
    return model.horizon_logits(features).log_softmax(-1)


@dataclass(frozen=True)
class HeadUpdateConfig:
    """One update of the head from a batch of decision groups.

    advantage: 'centered', a branch's reward minus its group's mean (Dr. GRPO), or 'normalized',
        also divided by the group's std (GRPO). Normalized blows a group whose branches all succeed
        and differ by one call up to the size of a group where h decides success or failure:
        measured on the arm, the head then went to the longest h everywhere in 18 iterations
        (SR 0.75 -> 0.69); centered keeps the reward's own trade-off (call_cost per call).
    clip: PPO clip range of each h's probability ratio. epochs: passes over the groups (cheap:
    only the head runs). minibatch_size: groups per gradient step. grad_clip: max global gradient
    norm. entropy_coef: weight of the mean entropy bonus (keeps h exploring).
    """

    advantage: str = 'centered'
    clip: float = 0.2
    epochs: int = 4
    minibatch_size: int = 64
    grad_clip: float = 1.0
    entropy_coef: float = 0.01

    def __post_init__(self):
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage '{self.advantage}' must be one of {list(ADVANTAGES)}")
        if not 0.0 < self.clip < 1.0:
            raise ValueError(f'clip ({self.clip}) must be in (0, 1)')
        for name in ('epochs', 'minibatch_size'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} ({getattr(self, name)}) must be >= 1')
        if not (self.grad_clip > 0 and self.entropy_coef >= 0):
            raise ValueError(f'grad_clip ({self.grad_clip}) must be > 0 and entropy_coef ({self.entropy_coef}) >= 0')


def head_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantage: torch.Tensor, clip: float,
              entropy_coef: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip over every h of each decision, each weighted by its probability under the policy
    that collected the branches (the expectation PPO samples, computed exactly over the K choices),
    each decision counting once; minus ``entropy_coef`` x the mean entropy.

    log_probs, old_log_probs, advantage: (N, K). Returns the loss and its diagnostics (pg_loss,
    entropy, approx_kl, clip_fraction).
    """
    old = old_log_probs.detach()
    out = ppo_clip_loss(log_probs.flatten(), old.flatten(), advantage.flatten(), old.exp().flatten(), clip)
    pg_loss = out.pg_loss   # the weights sum to 1 per decision and are normalized over all: 1 / N each
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
    with torch.no_grad():
        approx_kl = (old.exp() * (old - log_probs)).sum(-1).mean()   # KL(old || new), per decision
    return pg_loss - entropy_coef * entropy, {'pg_loss': pg_loss, 'entropy': entropy, 'approx_kl': approx_kl,
                                              'clip_fraction': out.clip_fraction}


def head_update(model: VLAModel, optimizer: torch.optim.Optimizer, groups: list[DecisionGroup],
                config: HeadUpdateConfig, generator: torch.Generator | None = None) -> dict[str, float]:
    """One update of ``model.horizon_head`` (the optimizer holds only its parameters) from decision
    groups; returns the diagnostics: decisions (groups with signal), pg_loss, entropy, approx_kl,
    clip_fraction (means over gradient steps; zeros when no group carried signal)."""
    data = decision_batch(groups, config.advantage)
    names = ('pg_loss', 'entropy', 'approx_kl', 'clip_fraction')
    stats = {'decisions': float(len(data.get('features', ())))}
    if not data:
        return {**stats, **dict.fromkeys(names, 0.0)}
    with torch.no_grad():
        old = head_log_probs(model, data['features'])
    n = len(old)
    totals = dict.fromkeys(names, 0.0)
    steps = 0
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, config.minibatch_size):
            idx = order[i:i + config.minibatch_size]
            loss, parts = head_loss(head_log_probs(model, data['features'][idx]), old[idx], data['advantage'][idx],
                                    config.clip, config.entropy_coef)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.horizon_head.parameters(), config.grad_clip)
            optimizer.step()
            steps += 1
            for k in names:
                totals[k] += float(parts[k].detach())
    return {**stats, **{k: v / steps for k, v in totals.items()}}
