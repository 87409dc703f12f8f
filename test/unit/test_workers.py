"""Parallel rollouts are the same episodes, job for job, whichever worker runs them."""
import numpy as np
import torch

from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.execution.config import SafetyConfig
from policytrim_ros.policy.vla import VLAConfig
from policytrim_ros.policy.vla.modeling_vla import VLAModel
from policytrim_ros.robots.arm import JOINT_NAMES
from policytrim_ros.training.workers import RolloutJob, RolloutPool, RolloutSetup

CONFIG = VLAConfig(vision_channels=(4, 8, 8), vision_keypoints=4, hidden_size=32, num_layers=1, num_heads=2,
                   joint_names=JOINT_NAMES)


def test_worker_processes_replay_each_other_and_follow_new_weights():
    torch.manual_seed(0)
    model = VLAModel(CONFIG)
    model.set_normalization(np.zeros(7), np.ones(7), np.zeros(7), np.full(7, 0.01))
    setup = RolloutSetup(model=CONFIG, env=EnvConfig(), safety=SafetyConfig(), max_episode_steps=8)
    jobs = [RolloutJob('reach', 1000, 4, noise_seed=1), RolloutJob('push', 1001, 8, noise_seed=2),
            RolloutJob('reach', 1000, 4, noise_seed=3)]
    # fresh processes both: this one may have run torch with other thread settings (last-bit differences)
    with RolloutPool(setup, workers=1) as local, RolloutPool(setup, workers=2) as pool:
        here, there = local.collect(model.state_dict(), jobs), pool.collect(model.state_dict(), jobs)
        assert [r.executed.tolist() for r in here] == [[4, 4], [8], [4, 4]]
        for a, b in zip(here, there):
            assert a.metrics.episode_id == b.metrics.episode_id
            np.testing.assert_array_equal(a.chunks, b.chunks)
            np.testing.assert_array_equal(a.images, b.images)
        with torch.no_grad():
            model.log_std_param.fill_(-3.0)       # new weights: the workers must pick them up
        moved = pool.collect(model.state_dict(), jobs[:1])[0]
        assert not np.array_equal(moved.chunks, there[0].chunks)
        np.testing.assert_array_equal(moved.chunks, local.collect(model.state_dict(), jobs[:1])[0].chunks)
