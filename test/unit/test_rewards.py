"""PolicyTrim rewards and group advantages against hand-worked groups (SB3 GAE-test style)."""
import math

import numpy as np
import pytest

from policytrim_ros.training.rewards import (ExtensionRewardConfig, StepRewardConfig, extension_rewards,
                                             group_advantages, group_kept, step_rewards)


def test_extension_reward_pays_the_horizon_bonus_only_on_success():
    success = [True, True, False, True]
    gamma = [0.25, 0.625, 1.0, 1.0]
    np.testing.assert_allclose(extension_rewards(success, gamma), [1.25, 1.625, 0.0, 2.0])
    np.testing.assert_allclose(extension_rewards(success, gamma, ExtensionRewardConfig(beta=0.5)),
                               [1.125, 1.3125, 0.0, 1.5])


def test_step_reward_terms_on_a_hand_worked_group():
    # successful S = 60, 80, 100: mu = 80, population sigma = sqrt(800 / 3) = 16.33 > the floor of 5
    success = [True, True, True, False]
    steps = [60, 80, 100, 150]
    sigma = math.sqrt(800 / 3)
    expected = [1 + 0.8 * 0.4 - 0.15 * math.tanh(20 / sigma),   # 40 % under budget, 20 steps from mu
                1 + 0.8 * 0.2,                                  # at mu: no penalty
                1 + 0.0 - 0.15 * math.tanh(20 / sigma),         # at the budget: no saving
                0.0]                                            # failed
    np.testing.assert_allclose(step_rewards(success, steps, step_budget=100), expected)
    over_budget = step_rewards([True, True], [90, 130], step_budget=100)
    assert over_budget[1] == pytest.approx(1 - 0.15 * math.tanh(1.0))   # no negative saving; |130 - 110| / 20


@pytest.mark.parametrize('floor_mode, expected_penalty', [
    ('floor', math.tanh(1 / 5)),   # the paper: |S - mu| / max(sigma, floor) = 1 / 5
    ('gate', 0.0),                 # the code: no penalty while sigma < floor
])
def test_step_spread_below_the_floor(floor_mode, expected_penalty):
    # S = 50, 52: mu = 51, sigma = 1 < sigma_floor = 5
    config = StepRewardConfig(floor_mode=floor_mode)
    rewards = step_rewards([True, True], [50, 52], step_budget=100, config=config)
    np.testing.assert_allclose(rewards, [1 + 0.8 * 0.5 - 0.15 * expected_penalty,
                                         1 + 0.8 * 0.48 - 0.15 * expected_penalty])


def test_gate_mode_penalizes_like_the_paper_once_the_spread_reaches_the_floor():
    steps, success = [40, 60], [True, True]   # sigma = 10 >= 5: both modes divide by sigma
    np.testing.assert_allclose(step_rewards(success, steps, 100, StepRewardConfig(floor_mode='gate')),
                               step_rewards(success, steps, 100, StepRewardConfig(floor_mode='floor')))


def test_all_fail_group_has_zero_rewards_zero_advantages_and_is_dropped():
    success = [False] * 8
    assert not step_rewards(success, [150] * 8, step_budget=100).any()
    assert not extension_rewards(success, [0.25] * 8).any()
    assert not group_advantages(np.zeros(8)).any()
    assert not group_kept(success)


def test_single_success_group_advantages():
    # G = 8, one success with R = 1: mean 1/8, unbiased std sqrt((7/8)^2 + 7 (1/8)^2) / 7) = sqrt(1/8)
    rewards = np.r_[1.0, np.zeros(7)]
    std = math.sqrt(1 / 8)
    np.testing.assert_allclose(group_advantages(rewards), np.r_[0.875 / std, np.full(7, -0.125 / std)], rtol=1e-5)
    assert group_kept(rewards > 0)                       # 1/8 >= 10 %
    assert not group_kept(np.r_[True, np.zeros(10, bool)])   # 1/11 < 10 %


def test_advantages_are_standardized_and_equal_rewards_carry_no_signal():
    adv = group_advantages([2.0, 1.0, 0.0, 1.0])
    assert adv.sum() == pytest.approx(0.0) and adv.std(ddof=1) == pytest.approx(1.0, rel=1e-5)
    assert not group_advantages([1.5] * 8).any()
    assert group_kept([True] * 8)                        # all-success groups still rank by h or S


@pytest.mark.parametrize('call, message', [
    (lambda: extension_rewards([True], [1.5]), r'acceptance ratios must lie in \(0, 1\]'),
    (lambda: step_rewards([True, False], [10], 100), 'group arrays must share the shape'),
    (lambda: step_rewards([True], [10], 0), r'step_budget \(0\) must be finite and > 0'),
    (lambda: group_advantages([1.0]), 'G >= 2'),
    (lambda: StepRewardConfig(floor_mode='clip'), "floor_mode 'clip' must be one of"),
    (lambda: StepRewardConfig(sigma_floor=0), r'sigma_floor \(0\) must be finite and > 0'),
    (lambda: ExtensionRewardConfig(beta=-1), r'beta \(-1\) must be finite and >= 0'),
])
def test_bad_groups_and_configs_name_the_rule(call, message):
    with pytest.raises(ValueError, match=message):
        call()
