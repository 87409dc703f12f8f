"""The efficiency head end to end with a tiny budget: one GRPO iteration on the frozen H = 32 arm
baseline, the checkpoint it writes (the VLA bit-identical, the head trained), evaluation with
horizon learned, and a resumed run that ends with the weights of an uninterrupted one."""
import csv
from dataclasses import replace

import numpy as np
import pytest
import torch

from policytrim_ros import resources
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.execution.config import ExecutionConfig
from policytrim_ros.execution.episode import run_episode
from policytrim_ros.envs.arm import ArmEnv
from policytrim_ros.policy.checkpoint import load_tensors
from policytrim_ros.policy.torch_policy import TorchVLAPolicy
from policytrim_ros.training.horizon_trainer import HorizonTrainConfig, train_horizon_head

BASELINE = 'package://policytrim_ros/models/bc-wrist-h32-dagger'   # config/training/horizon.yaml's init
ENV = EnvConfig(cameras=('scene_camera', 'wrist_camera'))
TINY = HorizonTrainConfig(init=BASELINE, tasks=('reach',), iterations=1, decisions_per_iteration=2,
                          max_episode_steps=40, workers=0, checkpoint_every=1)


def scalars(run):
    with (run / 'scalars.csv').open() as f:
        return {row['metric']: float(row['value']) for row in csv.DictReader(f)}


def test_one_iteration_trains_the_head_and_leaves_the_vla_as_it_was(tmp_path):
    final = train_horizon_head(replace(TINY, out_dir=str(tmp_path / 'run')), env=ENV, progress=False)
    logged = scalars(tmp_path / 'run')
    assert logged['branch_success_rate'] > 0 and logged['decisions'] > 0   # the baseline reaches: groups carry signal
    assert sum(logged[f'share_h{h}'] for h in TINY.horizons) == pytest.approx(1.0)
    assert logged['entropy'] == pytest.approx(np.log(5), abs=0.05)  # a new head starts uniform
    before = load_tensors(resources.resolve(BASELINE) + '/model.safetensors')
    after = load_tensors(final / 'model.safetensors')
    assert all(torch.equal(before[k].float(), after[k]) for k in before)
    assert not torch.equal(after['horizon_head.net.5.bias'], torch.zeros(5))   # a step was taken
    policy = TorchVLAPolicy(final)
    assert policy.metadata.horizons == (4, 8, 16, 24, 32)
    metrics, records = run_episode(ArmEnv(ENV), policy, ExecutionConfig(32, 32, 0.1, 40, horizon='learned'),
                                   'reach', 1000)
    assert records and all(r.n_action_steps in (4, 8, 16, 24, 32) or r.last_step == metrics.steps - 1
                           for r in records)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    two = replace(TINY, iterations=2)
    whole = train_horizon_head(replace(two, out_dir=str(tmp_path / 'whole')), env=ENV, progress=False)
    split = replace(two, out_dir=str(tmp_path / 'split'))
    train_horizon_head(replace(split, iterations=1), env=ENV, progress=False)
    resumed = train_horizon_head(split, env=ENV, progress=False, resume=True)
    a, b = load_tensors(whole / 'model.safetensors'), load_tensors(resumed / 'model.safetensors')
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileExistsError, match='already holds a run'):
        train_horizon_head(split, env=ENV, progress=False)
