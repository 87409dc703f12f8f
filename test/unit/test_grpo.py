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
