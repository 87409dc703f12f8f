"""Every checkpoint under models/ is complete, small, loadable and runnable with the shipped configs.

A shipped model is installed to share/ and named by package:// in configs, launch arguments and
the README, so a broken one fails at a user's `ros2 launch`, not here, unless this checks it.
"""
from pathlib import Path

import pytest

from policytrim_ros.config import from_dict, load_yaml, ros_parameters
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.factory import suite_joint_names
from policytrim_ros.policy.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
MODELS = sorted(p for p in (REPO / 'models').iterdir() if p.is_dir())
MAX_FILE_BYTES = 5 * 1024 * 1024


def test_the_shipped_models_are_there():
    shipped = {'bc-wrist-more-ft', 'bc-wrist-h32-dagger', 'policytrim-wrist', 'policytrim-wrist-h32-dagger',
               'bc-metaworld', 'policytrim-metaworld'}
    assert shipped <= {p.name for p in MODELS}


@pytest.mark.parametrize('model', MODELS, ids=lambda p: p.name)
def test_shipped_model_is_complete_small_and_loads(model):
    assert {'README.md', 'config.json', 'model.safetensors'} <= {p.name for p in model.iterdir()}
    for path in model.rglob('*'):
        assert path.stat().st_size <= MAX_FILE_BYTES, f'{path} is over 5 MB'
    readme = (model / 'README.md').read_text()
    assert 'How it was made' in readme and 'seed' in readme, f'{model.name}/README.md lacks its command and seed'
    _, config, _ = load_checkpoint(model)
    assert config.joint_names in (suite_joint_names('arm'), suite_joint_names('metaworld'))


@pytest.mark.parametrize('model', [m for m in MODELS if not m.name.endswith('metaworld')], ids=lambda p: p.name)
def test_arm_models_see_cameras_the_demo_config_renders(model):
    """config/sim.yaml's sim_node renders every camera each arm model was trained on, at its size."""
    env_params = ros_parameters(load_yaml(REPO / 'config' / 'sim.yaml'), 'sim_node')['env']
    env = from_dict(EnvConfig, env_params)
    _, config, _ = load_checkpoint(model)
    cameras = config.cameras or env.cameras[:1]
    assert set(cameras) <= set(env.cameras), f'{model.name} needs {cameras}, sim.yaml renders {env.cameras}'
    assert config.image_width == env.image_width * len(cameras)
    assert config.image_height == env.image_height
