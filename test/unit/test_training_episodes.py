"""training.episodes: what policy_node and trainer_node exchange for a training episode (plans, hot
weight loads with rollback, rollouts on disk keyed by weights, job and sampling)."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from policytrim_ros import constants as C
from policytrim_ros.execution.config import ExecutionConfig
from policytrim_ros.execution.metrics import EpisodeMetrics
from policytrim_ros.policy.checkpoint import WEIGHTS_FILE, file_sha256, save_checkpoint, save_tensors
from policytrim_ros.policy.vla.configuration_vla import VLAConfig
from policytrim_ros.policy.vla.modeling_vla import VLAModel
from policytrim_ros.training.episodes import (EpisodePlan, EpisodeStore, WeightsError, is_scorable, load_rollout,
                                              load_weights, save_rollout)
from policytrim_ros.training.exploration import ExplorationConfig
from policytrim_ros.training.horizon import HorizonRollout
from policytrim_ros.training.rollout import Rollout
from policytrim_ros.training.workers import RolloutJob

TINY = VLAConfig(image_height=32, image_width=32, vision_channels=(4, 8, 8), vision_keypoints=4, state_dim=3,
                 action_dim=3, chunk_size=4, hidden_size=32, num_layers=1, num_heads=2, joint_names=('a', 'b', 'c'))


def model(seed=0, config=TINY):
    torch.manual_seed(seed)
    return VLAModel(config).eval()


def metrics(end_reason=C.END_SUCCESS, **kw):
    return EpisodeMetrics('e', 'reach', 'go', end_reason == C.END_SUCCESS, 12, 3, 4, 4, 1.0, 0.5, end_reason, **kw)


def test_a_plan_refuses_what_cannot_run():
    with pytest.raises(ValueError, match='sampling_seed'):
        EpisodePlan('e', 1, sample='chunk')                  # sampling without a seed
    with pytest.raises(ValueError, match='sample'):
        EpisodePlan('e', 1, sample='gaussian', sampling_seed=0)
    with pytest.raises(ValueError, match='need sample horizon'):
        EpisodePlan('e', 1, sample='chunk', sampling_seed=0, forced=(1,))
    with pytest.raises(ValueError, match='n_action_steps 9'):
        EpisodePlan('e', 1, n_action_steps=9).execution(ExecutionConfig(chunk_size=8, n_action_steps=4))
    plan = EpisodePlan('e', 1, sample='horizon', sampling_seed=3, n_action_steps=8)
    execution = plan.execution(ExecutionConfig(chunk_size=8, n_action_steps=4))
    assert (execution.n_action_steps, execution.horizon, plan.seed) == (8, 'learned', 3)
    assert EpisodePlan('e', 1, sampling_seed=5).seed == -1   # means: the stats say so


def test_weights_load_only_when_the_hash_matches_and_everything_fits(tmp_path):
    running, trained = model(0), model(1)
    path = tmp_path / 'w.safetensors'
    save_tensors(path, trained.state_dict())
    loaded = load_weights(running, path, file_sha256(path))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in trained.state_dict().items())
    assert loaded is not running   # the running model is untouched: a failed load keeps it
    assert not all(torch.equal(running.state_dict()[k], v) for k, v in trained.state_dict().items())
    with pytest.raises(WeightsError, match='sha256'):
        load_weights(running, path, '0' * 64)
    other = VLAModel(replace(TINY, hidden_size=16))
    save_tensors(path, other.state_dict())
    with pytest.raises(WeightsError, match='does not fit'):
        load_weights(running, path, file_sha256(path))
    broken = trained.state_dict()
    broken['log_std_param'] = torch.full_like(broken['log_std_param'], float('nan'))
    save_tensors(path, broken)
    with pytest.raises(WeightsError, match='NaN'):
        load_weights(running, path, file_sha256(path))
    with pytest.raises(WeightsError, match='not found'):
        load_weights(running, tmp_path / 'missing.safetensors', '0' * 64)


def test_a_checkpoint_directory_may_add_a_head_but_not_change_the_robot(tmp_path):
    running = model(0)
    head = model(1).with_horizon_head((2, 4))
    save_checkpoint(tmp_path / 'head', head, head.config)
    loaded = load_weights(running, tmp_path / 'head', file_sha256(tmp_path / 'head' / WEIGHTS_FILE))
    assert loaded.horizon_head is not None and loaded.config.horizons == (2, 4)
    robot = model(0, replace(TINY, joint_names=('x', 'y', 'z')))
    save_checkpoint(tmp_path / 'robot', robot, robot.config)
    with pytest.raises(WeightsError, match="joint_names"):
        load_weights(running, tmp_path / 'robot', file_sha256(tmp_path / 'robot' / WEIGHTS_FILE))
    nan = model(2)
    with torch.no_grad():
        nan.log_std_param.fill_(float('nan'))
    save_checkpoint(tmp_path / 'nan', nan, nan.config)
    with pytest.raises(WeightsError, match='NaN'):
        load_weights(running, tmp_path / 'nan', file_sha256(tmp_path / 'nan' / WEIGHTS_FILE))


def test_rollouts_round_trip_through_their_files(tmp_path):
    chunk = Rollout(metrics(weights_version=2, sampling_seed=7), np.arange(2 * 32 * 32 * 3, dtype=np.uint8).reshape(
        2, 32, 32, 3), np.ones((2, 3), np.float32), np.full((2, 4, 3), 0.5, np.float32), np.array([4, 0]), 'go', 3)
    horizon = HorizonRollout(metrics(C.END_MAX_STEPS), np.ones((3, 5), np.float32), np.array([0, 1, 1]))
    for name, rollout in (('chunk', chunk), ('horizon', horizon)):
        save_rollout(tmp_path / f'{name}.safetensors', rollout)
        back = load_rollout(tmp_path / f'{name}.safetensors')
        assert type(back) is type(rollout) and back.metrics == rollout.metrics
        for field in ('images', 'states', 'chunks', 'executed', 'features', 'choices'):
            if hasattr(rollout, field):
                np.testing.assert_array_equal(getattr(back, field), getattr(rollout, field))
    assert load_rollout(tmp_path / 'chunk.safetensors').refused == 3
    (tmp_path / 'bad.safetensors').write_bytes(b'not a rollout')
    with pytest.raises(ValueError, match='not a rollout record'):
        load_rollout(tmp_path / 'bad.safetensors')


def test_an_episode_is_keyed_by_its_weights_job_and_sampling_not_its_id(tmp_path):
    job = RolloutJob('reach', 100, 8, 800, episode_id='a')
    setup = type('Setup', (), {'sample': 'chunk', 'exploration': ExplorationConfig(), 'max_episode_steps': 150})()
    key = EpisodeStore.key('w1', job, setup)
    assert key == EpisodeStore.key('w1', replace(job, episode_id='b'), setup)
    assert key != EpisodeStore.key('w2', job, setup)
    assert key != EpisodeStore.key('w1', replace(job, noise_seed=801), setup)
    setup.exploration = ExplorationConfig(correlation=0.5)
    assert key != EpisodeStore.key('w1', job, setup)
    store = EpisodeStore(tmp_path / 'episodes')
    assert store.get(key) is None
    rollout = HorizonRollout(metrics(), np.ones((1, 5), np.float32), np.array([1]))
    store.put(key, rollout)
    assert store.get(key).metrics == rollout.metrics


@pytest.mark.parametrize('end_reason, scorable', [
    (C.END_SUCCESS, True), (C.END_MAX_STEPS, True), (C.END_ERROR, True), (C.END_TOLERANCE_VIOLATED, True),
    (C.END_JOINT_STATES_LOST, False), (C.END_PREEMPTED, False), (C.END_STOPPED, False),
    (C.END_INFERENCE_TIMEOUT, False), (C.END_INFERENCE_FAILED, False), (C.END_SERVER_LOST, False),
    (C.END_CONTROLLER_ABORTED, False), (C.END_CONTROLLER_REJECTED, False)])
def test_only_the_policys_own_outcomes_are_scored(end_reason, scorable):
    assert is_scorable(metrics(end_reason)) is scorable
