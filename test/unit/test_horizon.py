"""The efficiency head: its log-probabilities and loss on hand-made groups, the executor's
variable-h bookkeeping against hand-computed episodes, and the head through both backends."""
import math

import numpy as np
import pytest
import torch

from policytrim_ros.config import ConfigError
from policytrim_ros.execution.config import ExecutionConfig
from policytrim_ros.execution.episode import run_episode
from policytrim_ros.execution.executor import ChunkExecutor
from policytrim_ros.execution.metrics import EpisodeMetrics
from policytrim_ros.execution.safety import UnsafeChunkError
from policytrim_ros.policy.base import Observation, PolicyMetadata
from policytrim_ros.policy.vla.configuration_vla import VLAConfig
from policytrim_ros.policy.vla.modeling_vla import HorizonHead, VLAModel
from policytrim_ros.training.horizon import (DecisionGroup, HeadUpdateConfig, HorizonRewardConfig, HorizonRollout,
                                             HorizonSamplingPolicy, branch_choices, decision_batch, head_log_probs,
                                             head_loss, head_update, horizon_rewards)

NAMES = ('a', 'b')
SMALL = dict(vision_channels=(4, 8, 8), vision_keypoints=4, hidden_size=16, num_layers=1, num_heads=2, chunk_size=8)


def head_model(logits=(0.0, 0.0, 0.0)) -> VLAModel:
    """A small model with a head over (2, 4, 8) whose logits are ``logits`` whatever the input."""
    model = VLAModel(VLAConfig(**SMALL)).with_horizon_head((2, 4, 8), hidden_size=8)
    with torch.no_grad():
        model.horizon_head.net[-1].bias.copy_(torch.tensor(logits))
    return model


def features(n, model):
    return torch.randn(n, HorizonHead.input_size(model.config), generator=torch.Generator().manual_seed(n))


# -- the head --------------------------------------------------------------------------------------
def test_log_prob_and_entropy_of_hand_made_logits():
    probs = np.array([0.5, 0.25, 0.25])
    model = head_model(tuple(np.log(probs)))
    log_probs = head_log_probs(model, features(3, model))
    np.testing.assert_allclose(log_probs.detach().numpy(), np.log(probs)[None].repeat(3, 0), rtol=1e-6)
    _, parts = head_loss(log_probs, log_probs, torch.zeros(3, 3), clip=0.2, entropy_coef=0.0)
    assert float(parts['entropy'].detach()) == pytest.approx(-(probs * np.log(probs)).sum())


def test_a_new_head_is_uniform_and_the_vla_is_untouched():
    base = VLAModel(VLAConfig(**SMALL)).eval()
    model = base.with_horizon_head((2, 4, 8)).eval()
    x = (torch.randint(0, 255, (2, 96, 96, 3), dtype=torch.uint8), torch.randn(2, 384), torch.randn(2, 7))
    mean, feats = model.plan(*x)
    assert torch.equal(mean, base(*x)) and torch.equal(model(*x), mean)
    assert feats.shape == (2, HorizonHead.input_size(model.config)) and not feats.requires_grad
    np.testing.assert_allclose(model.horizon_logits(feats).softmax(-1).detach().numpy(), np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match='no efficiency head'):
        base.horizon_logits(feats)


@pytest.mark.parametrize('horizons, rule', [((4,), '>= 2 increasing'), ((8, 4), 'increasing'),
                                            ((4, 4), 'increasing'), ((0, 4), '[1, chunk_size'),
                                            ((4, 9), '[1, chunk_size (8)]')])
def test_horizons_are_checked(horizons, rule):
    with pytest.raises(ValueError) as err:
        VLAConfig(**SMALL, horizons=horizons)
    assert rule in str(err.value) and str(list(horizons)) in str(err.value)


def test_extending_the_chunk_drops_the_head():
    model = head_model().extended(12)
    assert model.horizon_head is None and model.config.horizons == ()


# -- rewards and the loss on hand-made groups --------------------------------------------------------
def metrics(success, calls, utilization=0.5):
    return EpisodeMetrics('e', 'reach', 'go', success, 40, calls, 8, 8, utilization, 1.0,
                          'success' if success else 'max_steps')


def rollout(success, choices, feats):
    return HorizonRollout(metrics(success, len(choices)), feats, np.array(choices))


def test_rewards_price_calls_or_reward_longer_windows():
    group = [rollout(True, [0] * 4, None), rollout(True, [0] * 10, None), rollout(False, [0] * 2, None)]
    np.testing.assert_allclose(horizon_rewards(group, HorizonRewardConfig('calls', call_cost=0.05)), [0.8, 0.5, 0.0])
    group = [HorizonRollout(metrics(True, 3, 0.75), None, np.zeros(3, int)),
             HorizonRollout(metrics(False, 3, 1.0), None, np.zeros(3, int))]
    np.testing.assert_allclose(horizon_rewards(group, HorizonRewardConfig('extension', beta=2.0)), [2.5, 0.0])
    with pytest.raises(ValueError, match="kind 'speed' must be one of"):
        HorizonRewardConfig('speed')


def test_branches_replay_the_trunk_up_to_the_picked_call_then_try_every_h():
    trunk = rollout(True, [2, 0, 1, 1], None)
    assert branch_choices(trunk, 0, 3) == [(0,), (1,), (2,)]
    assert branch_choices(trunk, 2, 3) == [(2, 0, 0), (2, 0, 1), (2, 0, 2)]
    with pytest.raises(ValueError, match='call 4 is not a call of the trunk'):
        branch_choices(trunk, 4, 3)


def test_a_sampling_policy_plays_its_forced_choices_then_draws_from_the_head():
    model = head_model((-30.0, -30.0, 30.0)).eval()    # the head itself always draws h = 8 (index 2)
    policy = HorizonSamplingPolicy(model, torch.Generator().manual_seed(0), forced=(0, 1))
    obs = Observation(np.zeros((96, 96, 3), np.uint8), np.zeros(7), np.zeros(7), np.zeros(0), 'go', 0.0, 0)
    assert [policy.predict_chunk_and_horizon(obs)[1] for _ in range(4)] == [2, 4, 8, 8]
    assert policy.choices == [0, 1, 2, 2]
    assert np.stack(policy.features).shape == (4, HorizonHead.input_size(model.config))
    with pytest.raises(ValueError, match='must index the horizons'):
        HorizonSamplingPolicy(model, torch.Generator(), forced=(3,))
    close = head_model((0.0, 0.2, 0.1)).eval()         # nearly uniform: draws vary, the greedy pick does not
    greedy = HorizonSamplingPolicy(close, torch.Generator().manual_seed(0), forced=(0,), greedy=True)
    drawn = HorizonSamplingPolicy(close, torch.Generator().manual_seed(0))
    assert [greedy.predict_chunk_and_horizon(obs)[1] for _ in range(6)] == [2] + [4] * 5
    assert len({drawn.predict_chunk_and_horizon(obs)[1] for _ in range(30)}) == 3


def test_decision_groups_with_equal_rewards_carry_no_signal():
    f = np.ones(5, np.float32)
    groups = [DecisionGroup(f, np.array([0.9, 0.6, 0.0])), DecisionGroup(2 * f, np.zeros(3)),
              DecisionGroup(3 * f, np.full(3, 0.8))]
    data = decision_batch(groups)
    np.testing.assert_allclose(data['advantage'].numpy(), [[0.4, 0.1, -0.5]], rtol=1e-5)   # R - mean
    assert data['features'].tolist() == [f.tolist()]
    std = np.std([0.9, 0.6, 0.0], ddof=1)
    np.testing.assert_allclose(decision_batch(groups, 'normalized')['advantage'].numpy(),
                               [[0.4 / std, 0.1 / std, -0.5 / std]], rtol=1e-5)
    assert decision_batch([DecisionGroup(f, np.zeros(3))]) == {}


def test_the_head_gradient_of_a_hand_made_decision_group_and_the_vla_stays_frozen():
    model = head_model()
    feats = features(2, model).numpy()
    groups = [DecisionGroup(feats[0], np.array([0.0, 0.6, 0.9])),   # h = 8 best, h = 2 failed
              DecisionGroup(feats[1], np.full(3, 0.7))]             # no signal: left out
    for p in model.parameters():
        p.requires_grad_(False)
    head = list(model.horizon_head.parameters())
    for p in head:
        p.requires_grad_(True)
    vla = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith('horizon_head.')}
    stats = head_update(model, torch.optim.SGD(head, lr=1.0), groups,
                        HeadUpdateConfig(epochs=1, entropy_coef=0.0, grad_clip=1e9))
    # at ratio 1 with p uniform: d loss / d logit_j = -p_j (A_j - sum_a p_a A_a) = -A_j / 3 (the
    # centered advantages sum to 0); one SGD step of lr 1 from zero logits leaves bias = A / 3
    advantage = np.array([0.0, 0.6, 0.9]) - 0.5
    np.testing.assert_allclose(model.horizon_head.net[-1].bias.detach().numpy(), advantage / 3, atol=1e-5)
    assert stats['decisions'] == 1 and abs(stats['pg_loss']) < 1e-6 and stats['clip_fraction'] == 0.0
    assert stats['entropy'] == pytest.approx(math.log(3)) and stats['approx_kl'] == pytest.approx(0.0, abs=1e-7)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in vla.items())
    probs = model.horizon_logits(torch.from_numpy(feats)).softmax(-1).detach()
    assert (probs[:, 2] > probs[:, 1]).all() and (probs[:, 1] > probs[:, 0]).all()


def test_the_clipped_loss_stops_pushing_an_h_past_the_clip_range():
    old = torch.log(torch.full((1, 3), 1 / 3))
    advantage = torch.tensor([[1.0, 0.0, -1.0]])
    pushed = torch.log(torch.tensor([[0.45, 0.1, 0.45]])).requires_grad_(True)   # ratios 1.35, 0.3, 1.35
    loss, parts = head_loss(pushed, old, advantage, clip=0.2, entropy_coef=0.0)
    loss.backward()
    assert parts['clip_fraction'] > 0
    assert pushed.grad[0, 0] == 0.0            # A > 0 past 1 + clip: no more push on the favoured h
    assert pushed.grad[0, 2] != 0.0            # A < 0 past 1 + clip is not clipped (PPO's min): pulled back


# -- the executor's variable-h bookkeeping ---------------------------------------------------------
def learned(**kw):
    base = dict(chunk_size=8, n_action_steps=8, control_dt=0.1, max_episode_steps=20, horizon='learned')
    return ExecutionConfig(**{**base, **kw})


def test_variable_windows_are_counted_as_dispatched_and_truncated_at_the_step_limit():
    ex = ChunkExecutor(learned(), NAMES)
    ex.start('ep', 'task', 'go', 0.0)
    chunk = np.zeros((8, 2))
    records = []
    for h in (2, 8, 4, 8):      # windows 2, 8, 4, then 6 (20 - 14 steps left)
        traj, record = ex.dispatch(chunk, ex.steps * 0.1, None, 0.0, h)
        records.append(record)
        assert len(traj.positions) == record.n_action_steps
        ex.complete_window()
    assert [(r.call_index, r.n_action_steps, r.first_step, r.last_step) for r in records] == \
        [(0, 2, 0, 1), (1, 8, 2, 9), (2, 4, 10, 13), (3, 6, 14, 19)]
    assert ex.out_of_steps
    m = ex.finish(False, 'max_steps', 1.0)
    assert (m.steps, m.inference_calls, m.n_action_steps) == (20, 4, 8)
    assert m.chunk_utilization == pytest.approx(20 / 4 / 8)


def test_a_learned_h_is_capped_at_n_action_steps_and_a_success_mid_window_counts_its_steps():
    ex = ChunkExecutor(learned(n_action_steps=4), NAMES)
    ex.start('ep', 'task', 'go', 0.0)
    _, record = ex.dispatch(np.zeros((8, 2)), 0.0, None, 0.0, 8)
    assert record.n_action_steps == 4
    ex.end_window_at(0.3)        # success seen after 3 of its 4 steps
    m = ex.finish(True, 'success', 1.0)
    assert (m.steps, m.inference_calls, m.chunk_utilization) == (3, 1, 3 / 8)   # executed h / H


def test_h_per_call_only_with_learned_and_in_range():
    ex = ChunkExecutor(learned(), NAMES)
    ex.start('ep', 'task', 'go', 0.0)
    with pytest.raises(ValueError, match='with horizon learned only'):
        ex.dispatch(np.zeros((8, 2)), 0.0, None, 0.0)
    for bad in (0, 9, True):
        with pytest.raises(UnsafeChunkError, match='the efficiency head chose h'):
            ex.dispatch(np.zeros((8, 2)), 0.0, None, 0.0, bad)
    assert ex.inference_calls == 0
    fixed = ChunkExecutor(learned(horizon='fixed'), NAMES)
    fixed.start('ep', 'task', 'go', 0.0)
    with pytest.raises(ValueError, match='with horizon learned only'):
        fixed.dispatch(np.zeros((8, 2)), 0.0, None, 0.0, 4)


class ScriptedHorizons:
    """A policy with a head that picks the h of ``script`` in turn; chunks hold the position."""

    metadata = PolicyMetadata(name='scripted', chunk_size=8, joint_names=NAMES, image_size=None, horizons=(2, 4, 8))

    def __init__(self, script):
        self.script = list(script)

    def reset(self):
        self.calls = 0

    def predict_action_chunk(self, observation):
        return np.repeat(observation.joint_positions[None], 8, axis=0)

    def predict_chunk_and_horizon(self, observation):
        self.calls += 1
        return self.predict_action_chunk(observation), self.script[self.calls - 1]


class CountingEnv:
    joint_names, cameras, instruction, joint_targets = NAMES, (), 'go', True

    def __init__(self, success_at):
        self.success_at = success_at

    def reset(self, task, seed, render=True):
        self.steps = 0
        return self.observe()

    @property
    def time(self):
        return self.steps * 0.1

    def set_trajectory(self, traj):
        pass

    def hold(self):
        pass

    def step(self):
        self.steps += 1
        return self.steps >= self.success_at

    def observe(self, render=True):
        return Observation(np.zeros((0, 0, 3), np.uint8), np.zeros(2), np.zeros(2), np.zeros(0), 'go',
                           self.time, self.steps)


def test_an_episode_runs_each_call_for_the_h_its_head_picked():
    metrics_, records = run_episode(CountingEnv(success_at=13), ScriptedHorizons([8, 2, 4, 8]), learned(), 'task', 0)
    # windows: steps 1-8, 9-10, 11-14 (success at 13, its 3rd step)
    assert [(r.n_action_steps, r.first_step) for r in records] == [(8, 0), (2, 8), (4, 10)]
    assert (metrics_.success, metrics_.steps, metrics_.inference_calls) == (True, 13, 3)
    assert metrics_.chunk_utilization == pytest.approx((8 + 2 + 3) / 3 / 8)   # mean executed h / H


def test_learned_needs_a_policy_with_a_head():
    policy = ScriptedHorizons([8])
    policy.metadata = PolicyMetadata(name='plain', chunk_size=8, joint_names=NAMES, image_size=None)
    with pytest.raises(ConfigError, match='the plain policy has none'):
        run_episode(CountingEnv(5), policy, learned(), 'task', 0)


# -- both backends ----------------------------------------------------------------------------------
def test_torch_and_onnx_backends_pick_the_same_h(tiny_horizon_checkpoint, tmp_path):
    import shutil

    from policytrim_ros.policy.checkpoint import load_checkpoint
    from policytrim_ros.policy.onnx import OnnxVLAPolicy, export_onnx
    from policytrim_ros.policy.torch_policy import TorchVLAPolicy
    directory = tmp_path / 'ckpt'
    shutil.copytree(tiny_horizon_checkpoint, directory)
    model = load_checkpoint(directory)[0]
    assert model.config.horizons == (2, 4, 8, 16) and model.horizon_head is not None
    export_onnx(directory)
    torch_policy, onnx_policy = TorchVLAPolicy(directory), OnnxVLAPolicy(directory)
    assert torch_policy.metadata.horizons == onnx_policy.metadata.horizons == (2, 4, 8, 16)
    rng = np.random.default_rng(0)
    picks = set()
    for _ in range(12):
        obs = Observation(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), rng.normal(0, 1, 7), np.zeros(7),
                          np.zeros(0), 'pick up the red cube', 0.0, 0)
        (a, h), (b, g) = torch_policy.predict_chunk_and_horizon(obs), onnx_policy.predict_chunk_and_horizon(obs)
        np.testing.assert_allclose(a, b, atol=1e-3)
        np.testing.assert_allclose(a, torch_policy.predict_action_chunk(obs))
        assert h == g
        picks.add(h)
    assert len(picks) > 1      # the fixture's head depends on its input
