"""Parallel rollouts are the same episodes, job for job, whichever worker runs them, alone or in lockstep."""
import dataclasses

import numpy as np
import torch

from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.execution.config import SafetyConfig
from policytrim_ros.policy.vla import VLAConfig
from policytrim_ros.policy.vla.modeling_vla import VLAModel
from policytrim_ros.robots.arm import JOINT_NAMES
from policytrim_ros.training.workers import RolloutJob, RolloutPool, RolloutSetup, shares

CONFIG = VLAConfig(vision_channels=(4, 8, 8), vision_keypoints=4, hidden_size=32, num_layers=1, num_heads=2,
                   joint_names=JOINT_NAMES)


def test_worker_processes_replay_each_other_and_follow_new_weights():
    torch.manual_seed(0)
    model = VLAModel(CONFIG)
    model.set_normalization(np.zeros(7), np.ones(7), np.zeros(7), np.full(7, 0.01))
    setup = RolloutSetup(model=CONFIG, env=EnvConfig(), safety=SafetyConfig(), max_episode_steps=8)
    jobs = [RolloutJob('reach', 1000, 4, noise_seed=1), RolloutJob('push', 1001, 8, noise_seed=2),
            RolloutJob('reach', 1000, 4, noise_seed=3)]
    lockstep = dataclasses.replace(setup, envs_per_worker=2)
    # fresh processes both: this one may have run torch with other thread settings (last-bit differences)
    with RolloutPool(setup, workers=1) as local, RolloutPool(lockstep, workers=2) as pool:
        here, there = local.collect(model.state_dict(), jobs), pool.collect(model.state_dict(), jobs)
        assert [r.executed.tolist() for r in here] == [[4, 4], [8], [4, 4]]
        for a, b in zip(here, there):   # jobs 0 and 1 in one lockstep batch, 2 alone in the other worker
            assert a.metrics.episode_id == b.metrics.episode_id
            assert (a.metrics.steps, a.metrics.inference_calls) == (b.metrics.steps, b.metrics.inference_calls)
            np.testing.assert_allclose(a.chunks, b.chunks, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(here[2].chunks, there[2].chunks)
        np.testing.assert_array_equal(here[2].images, there[2].images)
        with torch.no_grad():
            model.log_std_param.fill_(-3.0)       # new weights: the workers must pick them up
        moved = pool.collect(model.state_dict(), jobs[:1])[0]
        assert not np.array_equal(moved.chunks, there[0].chunks)
        np.testing.assert_array_equal(moved.chunks, local.collect(model.state_dict(), jobs[:1])[0].chunks)


def test_shares_give_each_worker_consecutive_jobs_in_order():
    jobs = list(range(10))
    assert shares(jobs, 2, 1) == [(j,) for j in jobs]                 # one env: any free worker takes the next job
    assert shares(jobs, 2, 2) == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)]  # at least one share per worker
    assert shares(jobs, 0, 2) == [(0, 1, 2, 3, 4, 5, 6, 7), (8, 9)]  # at most 4 x envs_per_worker
    assert shares([], 2, 8) == []
