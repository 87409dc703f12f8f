"""RL rollouts record exactly what was sampled and executed, replayably."""
import numpy as np
import pytest
import torch

from policytrim_ros.execution.config import ExecutionConfig, SafetyConfig
from policytrim_ros.policy.vla import VLAConfig
from policytrim_ros.policy.vla.instruction import shared_encoder
from policytrim_ros.policy.vla.modeling_vla import VLAModel
from policytrim_ros.robots.arm import JOINT_NAMES
from policytrim_ros.training.rollout import SamplingVLAPolicy, collect_rollout

H = 16
CONFIG = VLAConfig(vision_channels=(4, 8, 8), vision_keypoints=4, hidden_size=32, num_layers=1, num_heads=2,
                   chunk_size=H, joint_names=JOINT_NAMES)
EXECUTION = ExecutionConfig(chunk_size=H, n_action_steps=4, control_dt=0.1, max_episode_steps=10)


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    model = VLAModel(CONFIG).eval()
    model.set_normalization(np.zeros(7), np.ones(7), np.zeros(7), np.full(7, 0.01))
    return model


def rollout(env, model, seed, safety=None):
    policy = SamplingVLAPolicy(model, torch.Generator().manual_seed(seed))
    return collect_rollout(env, policy, EXECUTION, 'reach', 1000, safety=safety)


def test_rollout_records_every_executed_call(env, model):
    r = rollout(env, model, seed=7)
    assert r.metrics.steps == 10 and r.metrics.inference_calls == 3          # windows of 4, 4 and 2
    assert r.executed.tolist() == [4, 4, 2]
    assert r.images.shape == (3, 96, 96, 3) and r.states.shape == (3, 7) and r.chunks.shape == (3, H, 7)
    assert r.executed_mask().sum(1).tolist() == [4, 4, 2] and r.instruction == 'reach the red target'


def test_recorded_inputs_reproduce_the_sampling_noise(env, model):
    """Re-planning from the recorded plan-time inputs gives the mean each chunk was drawn around."""
    r = rollout(env, model, seed=7)
    text = torch.from_numpy(np.stack([shared_encoder().encode(r.instruction)] * len(r.chunks)))
    with torch.no_grad():
        mean = model(torch.from_numpy(r.images), text, torch.from_numpy(r.states))
        z = model.normalized_error(torch.from_numpy(r.chunks), mean) / model.log_std().exp()
    generator = torch.Generator().manual_seed(7)
    drawn = torch.cat([torch.randn((1, H, 7), generator=generator) for _ in range(len(r.chunks))])
    assert torch.allclose(z, drawn, atol=1e-3)
    log_prob = model.gaussian_log_prob(mean, torch.from_numpy(r.chunks), torch.from_numpy(r.executed_mask()))
    assert torch.isfinite(log_prob).all()


def test_same_noise_seed_replays_and_another_explores(env, model):
    assert np.array_equal(rollout(env, model, seed=3).chunks, rollout(env, model, seed=3).chunks)
    assert not np.array_equal(rollout(env, model, seed=3).chunks, rollout(env, model, seed=4).chunks)


def test_a_rejected_chunk_ends_the_episode_and_is_kept_for_credit(env, model):
    frozen = SafetyConfig(max_velocity=(1e-6,) * 7)
    r = rollout(env, model, seed=7, safety=frozen)
    assert r.metrics.end_reason == 'error' and not r.metrics.success and r.metrics.inference_calls == 0
    # the refused chunk is the only call: nothing ran, the check read its window of 4 and the next target
    assert r.chunks.shape == (1, H, 7) and r.images.shape == (1, 96, 96, 3) and r.executed.tolist() == [0]
    assert r.refused == 5
    assert not r.credited_mask(False).any()
    assert r.credited_mask(True).sum(1).tolist() == [5]
    assert np.array_equal(r.chunks, rollout(env, model, seed=7, safety=frozen).chunks)   # replayable


def test_a_refused_full_window_credits_at_most_the_chunk(env, model):
    frozen = SafetyConfig(max_velocity=(1e-6,) * 7)
    policy = SamplingVLAPolicy(model, torch.Generator().manual_seed(7))
    r = collect_rollout(env, policy, ExecutionConfig(H, H, 0.1, 40), 'reach', 1000, safety=frozen)
    assert r.refused == H and r.credited_mask(True).sum(1).tolist() == [H]   # h = H: no next target


def test_without_a_refusal_crediting_changes_nothing(env, model):
    r = rollout(env, model, seed=7)
    assert r.refused == 0 and r.metrics.end_reason != 'error'
    assert np.array_equal(r.credited_mask(True), r.executed_mask())
