"""The PPO-clip loss on executed windows, against hand-computed values."""
import math

import pytest
import torch

from policytrim_ros.training.grpo import ppo_clip_loss


def test_unclipped_ratios_give_the_weighted_policy_gradient():
    old = torch.tensor([-1.0, -2.0])
    new = old + torch.tensor([0.1, -0.1])            # ratios e^0.1 = 1.105, e^-0.1 = 0.905: inside 1 +- 0.2
    advantage = torch.tensor([1.0, -1.0])
    out = ppo_clip_loss(new, old, advantage)
    assert out.pg_loss.item() == pytest.approx(-(math.exp(0.1) - math.exp(-0.1)) / 2)
    assert out.clip_fraction.item() == 0.0 and out.kl.item() == 0.0
    assert out.approx_kl.item() == pytest.approx(((math.exp(0.1) - 1 - 0.1) + (math.exp(-0.1) - 1 + 0.1)) / 2)


def test_clipping_stops_the_gradient_only_where_the_objective_is_pessimistic():
    old = torch.zeros(2)
    new = torch.tensor([0.5, 0.5], requires_grad=True)   # ratio e^0.5 = 1.65 > 1.2
    out = ppo_clip_loss(new, old, torch.tensor([1.0, -1.0]))
    out.loss.backward()
    # positive advantage: min(1.65 A, 1.2 A) = 1.2 A, clipped, no gradient;
    # negative advantage: min(-1.65, -1.2) = -1.65, unclipped, gradient -A * ratio / 2
    assert new.grad[0].item() == 0.0
    assert new.grad[1].item() == pytest.approx(math.exp(0.5) / 2)
    assert out.clip_fraction.item() == 1.0
    assert out.pg_loss.item() == pytest.approx(-(1.2 - math.exp(0.5)) / 2)


def test_weights_make_each_trajectory_count_once():
    # trajectory A made 3 calls (weight 1/3 each), trajectory B 1 call (weight 1)
    old = torch.zeros(4)
    new = torch.zeros(4)
    advantage = torch.tensor([1.0, 1.0, 1.0, -1.0])
    out = ppo_clip_loss(new, old, advantage, weight=torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0]))
    assert out.pg_loss.item() == pytest.approx(0.0)      # A's +1 and B's -1 balance


def test_kl_term_is_zero_at_the_reference_and_positive_away_from_it():
    new = torch.tensor([-1.0, -1.5])
    out = ppo_clip_loss(new, new, torch.zeros(2), ref_log_prob=new, kl_coef=0.1)
    assert out.kl.item() == pytest.approx(0.0)
    away = ppo_clip_loss(new, new, torch.zeros(2), ref_log_prob=new - 0.3, kl_coef=0.1)
    assert away.kl.item() == pytest.approx(math.exp(-0.3) - 1 + 0.3)
    assert away.loss.item() == pytest.approx(0.1 * away.kl.item())
    with pytest.raises(ValueError, match='needs ref_log_prob'):
        ppo_clip_loss(new, new, torch.zeros(2), kl_coef=0.1)


def _group(seeds=(1, 2), successes=(True, False), noise=None):
    """Two sampled reach rollouts of a tiny model, with the outcomes overridden."""
    from dataclasses import replace

    import numpy as np

    from policytrim_ros.envs.arm import ArmEnv
    from policytrim_ros.execution.config import ExecutionConfig
    from policytrim_ros.policy.vla import VLAConfig
    from policytrim_ros.policy.vla.modeling_vla import VLAModel
    from policytrim_ros.robots.arm import JOINT_NAMES
    from policytrim_ros.training.rollout import SamplingVLAPolicy, collect_rollout
    torch.manual_seed(0)
    model = VLAModel(VLAConfig(vision_channels=(4, 8, 8), vision_keypoints=4, hidden_size=32, num_layers=1,
                               num_heads=2, joint_names=JOINT_NAMES))
    model.set_normalization(np.zeros(7), np.ones(7), np.zeros(7), np.full(7, 0.01))
    env = ArmEnv()
    execution = ExecutionConfig(chunk_size=16, n_action_steps=4, control_dt=0.1, max_episode_steps=8)
    rollouts = []
    for seed, success in zip(seeds, successes):
        r = collect_rollout(env, SamplingVLAPolicy(model, torch.Generator().manual_seed(seed), noise=noise),
                            execution, 'reach', 1000)
        rollouts.append(replace(r, metrics=replace(r.metrics, success=success)))
    env.close()
    return model, rollouts, np.array([1.0 if s else 0.0 for s in successes])


def _objective(model, rollouts, rewards, noise=None):
    """sum_i A_i * mean over i's calls of log pi(executed window): what one GRPO step ascends."""
    from policytrim_ros.training.exploration import ChunkNoise
    from policytrim_ros.policy.vla.instruction import shared_encoder
    from policytrim_ros.training.rewards import group_advantages
    total = 0.0
    with torch.no_grad():
        for r, advantage in zip(rollouts, group_advantages(rewards)):
            text = torch.tensor(shared_encoder().encode(r.instruction))[None].expand(len(r.chunks), -1)
            mean = model(torch.from_numpy(r.images), text, torch.from_numpy(r.states))
            lp = (noise or ChunkNoise()).log_prob(model, mean, torch.from_numpy(r.chunks),
                                                  torch.from_numpy(r.executed_mask()))
            total += advantage * lp.mean().item()
    return total


@pytest.mark.parametrize('exploration, log_ratio, lr', [({}, 'sum', 1e-4), ({'correlation': 0.9}, 'sum', 1e-4),
                                                      ({'waypoints': 3}, 'mean', 1e-2)])
def test_a_grpo_step_makes_the_better_trajectory_more_likely(exploration, log_ratio, lr):
    from policytrim_ros.training.exploration import ChunkNoise, ExplorationConfig
    from policytrim_ros.training.grpo import GRPOConfig, grpo_update
    noise = ChunkNoise(ExplorationConfig(**exploration))   # sampled and scored with the same noise
    model, rollouts, rewards = _group(noise=noise)
    before = _objective(model, rollouts, rewards, noise)
    stats = grpo_update(model, torch.optim.SGD(model.parameters(), lr=lr), [(rollouts, rewards)],
                        GRPOConfig(minibatch_size=64, log_ratio=log_ratio), noise=noise)
    assert stats['groups_kept'] == 1.0 and stats['windows'] == 4.0       # 2 rollouts x 2 calls
    assert stats['clip_fraction'] == 0.0 and stats['approx_kl'] == pytest.approx(0.0, abs=1e-6)
    assert _objective(model, rollouts, rewards, noise) > before


def test_an_all_fail_group_leaves_the_model_alone():
    from policytrim_ros.training.grpo import grpo_update
    model, rollouts, rewards = _group(successes=(False, False))
    weights = [p.detach().clone() for p in model.parameters()]
    stats = grpo_update(model, torch.optim.SGD(model.parameters(), lr=1.0), [(rollouts, rewards)])
    assert stats['groups_kept'] == 0.0 and stats['windows'] == 0.0 and stats['pg_loss'] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))



def test_mean_log_ratio_bounds_long_and_short_windows_alike():
    # both windows moved by 0.01 nats per executed action dimension: 4 x 7 and 32 x 7 dimensions
    dims = torch.tensor([28.0, 224.0])
    old = torch.tensor([-50.0, -400.0])
    new = old + 0.01 * dims
    summed = ppo_clip_loss(new, old, torch.tensor([1.0, 1.0]))
    meaned = ppo_clip_loss(new, old, torch.tensor([1.0, 1.0]), dims=dims)
    assert summed.clip_fraction.item() == pytest.approx(1.0)     # ratios e^0.28 and e^2.24
    assert meaned.clip_fraction.item() == 0.0                     # e^0.01 each
    assert meaned.pg_loss.item() == pytest.approx(-math.exp(0.01))
    assert meaned.approx_kl.item() == pytest.approx(math.exp(0.01) - 1.0 - 0.01, rel=1e-2)


def test_a_mean_log_ratio_grpo_step_makes_the_better_trajectory_more_likely():
    from policytrim_ros.training.grpo import GRPOConfig, grpo_update
    model, rollouts, rewards = _group()
    before = _objective(model, rollouts, rewards)
    stats = grpo_update(model, torch.optim.SGD(model.parameters(), lr=1e-2), [(rollouts, rewards)],
                        GRPOConfig(minibatch_size=64, log_ratio='mean'))
    assert stats['windows'] == 4.0 and stats['clip_fraction'] == 0.0
    assert _objective(model, rollouts, rewards) > before
    with pytest.raises(ValueError, match="'sum' or 'mean'"):
        GRPOConfig(log_ratio='max')


def test_a_refused_chunk_is_charged_only_when_credit_refused_is_on():
    """A rollout the safety checks ended: off, it adds no window; on, its refused chunk gets the
    rollout's (negative) advantage and the update makes that chunk less likely."""
    from dataclasses import replace

    import numpy as np

    from policytrim_ros.policy.vla.instruction import shared_encoder
    from policytrim_ros.training.grpo import GRPOConfig, grpo_update
    model, rollouts, rewards = _group()
    good, bad = rollouts
    # the failed rollout ends in a refused chunk: its last call kept, nothing of it executed
    refused = replace(bad, executed=np.append(bad.executed[:-1], 0), refused=5)
    group = [([good, refused], rewards)]

    def refused_log_prob():
        text = torch.tensor(shared_encoder().encode(refused.instruction))[None]
        with torch.no_grad():
            return model.log_prob(torch.from_numpy(refused.images[-1:]), text, torch.from_numpy(refused.states[-1:]),
                                  torch.from_numpy(refused.chunks[-1:]),
                                  torch.from_numpy(refused.credited_mask(True)[-1:])).item()

    weights = [p.detach().clone() for p in model.parameters()]
    after = {}
    for credit in (False, True):
        for p, w in zip(model.parameters(), weights):
            p.data.copy_(w)
        stats = grpo_update(model, torch.optim.SGD(model.parameters(), lr=1e-3), group,
                            GRPOConfig(credit_refused=credit, log_ratio='mean'))
        assert stats['windows'] == (4.0 if credit else 3.0)    # 2 + 1 executed calls, and the refused one
        after[credit] = refused_log_prob()
    assert after[True] < after[False]


def test_an_exact_kl_step_pulls_a_drifted_policy_back_to_the_reference():
    import copy

    from policytrim_ros.training.grpo import GRPOConfig, grpo_update
    model, rollouts, rewards = _group()
    reference = copy.deepcopy(model)
    config = GRPOConfig(kl_coef=1.0, kl_estimator='exact', log_ratio='mean')
    at_init = grpo_update(model, torch.optim.SGD(model.parameters(), lr=0.0), [(rollouts, rewards)], config,
                          reference=reference)
    assert at_init['kl'] == 0.0                        # the same policy: exactly 0
    with torch.no_grad():
        model.action_head.bias.add_(0.5)               # every step's mean 0.5 normalized units off
    gap = (model.action_head.bias - reference.action_head.bias).abs().sum().item()
    drifted = grpo_update(model, torch.optim.SGD(model.parameters(), lr=1e-2), [(rollouts, rewards)], config,
                          reference=reference)
    # 0.5 / exp(-1) per dimension: KL = (0.5 / e^-1)^2 / 2 = 0.92 per executed action dimension
    assert drifted['kl'] == pytest.approx(0.5 * (0.5 / math.exp(-1.0)) ** 2, rel=1e-3)
    assert (model.action_head.bias - reference.action_head.bias).abs().sum().item() < gap
    with pytest.raises(ValueError, match="'k3' or 'exact'"):
        GRPOConfig(kl_estimator='k2')
