"""Test-wide environment: DDS stays on this machine, each test run gets its own ROS domain."""
import os
import random
import sys

# Must be set before anything initialises rclpy or spawns a node process.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(101, 200)))
os.environ.setdefault('AMENT_PREFIX_PATH', sys.prefix)
os.environ.setdefault('MUJOCO_GL', 'egl')


import pytest  # noqa: E402  (after the environment above)

FIXTURE_CAMERAS = ('scene_camera',)
"""The fixture checkpoints see config/sim.yaml's first camera at its 96 x 96 (so the shipped node
configs run them as they are)."""


@pytest.fixture(scope='session')
def make_tiny_checkpoint(tmp_path_factory):
    """``make_tiny_checkpoint(chunk_size=16)`` -> the directory of a sealed VLA checkpoint of the
    embedded arm with random weights, built once per test session and H (about 0.1 s each).

    For tests that need "a checkpoint" (loading, H, cameras, node and CLI plumbing), not a
    shipped model's behaviour: it succeeds at nothing. Its targets stay within ~0.01 rad of the
    joint positions (delta std 0.01), so every chunk passes the shipped safety limits.
    """
    built = {}

    def make(chunk_size: int = 16):
        if chunk_size not in built:
            import numpy as np
            import torch

            from policytrim_ros.robots.arm import JOINT_NAMES
            from policytrim_ros.policy.checkpoint import save_checkpoint
            from policytrim_ros.policy.vla import VLAConfig
            from policytrim_ros.policy.vla.modeling_vla import VLAModel
            config = VLAConfig(vision_channels=(4, 8, 8), vision_keypoints=4, hidden_size=32, num_layers=1,
                               num_heads=2, chunk_size=chunk_size, joint_names=JOINT_NAMES, cameras=FIXTURE_CAMERAS)
            torch.manual_seed(chunk_size)
            model = VLAModel(config).eval()
            model.set_normalization(np.zeros(7), np.ones(7), np.zeros(7), np.full(7, 0.01))
            directory = tmp_path_factory.mktemp(f'tiny-vla-h{chunk_size}')
            built[chunk_size] = save_checkpoint(directory, model, config, {'fixture': 'test/conftest.py'})
        return built[chunk_size]

    return make


@pytest.fixture(scope='session')
def tiny_horizon_checkpoint(make_tiny_checkpoint, tmp_path_factory):
    """The H = 16 fixture checkpoint with an efficiency head over h in (2, 4, 8, 16) whose random,
    large last layer makes its pick depend on the observation (a new head's zero layer would always
    pick the first h): for the learned-h plumbing, not for its choices."""
    import torch

    from policytrim_ros.policy.checkpoint import load_checkpoint, save_checkpoint
    model = load_checkpoint(make_tiny_checkpoint(16))[0].with_horizon_head((2, 4, 8, 16), hidden_size=16)
    torch.manual_seed(1)
    with torch.no_grad():
        model.horizon_head.net[-1].weight.normal_(0.0, 3.0)
    return save_checkpoint(tmp_path_factory.mktemp('tiny-vla-h16-head'), model, model.config,
                           {'fixture': 'test/conftest.py'})


@pytest.fixture(scope='session')
def tiny_checkpoint(make_tiny_checkpoint):
    """The H = 16 fixture checkpoint (``make_tiny_checkpoint``)."""
    return make_tiny_checkpoint(16)
