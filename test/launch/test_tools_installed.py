"""Where ../shared/ros2-extras sits next to the checkout (CI), scripts/setup.sh must have installed
the real ROS 2 launch/CLI tools: otherwise test_ros2_launch.py would skip instead of running."""
import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_setup_installed_the_ros2_tools_when_shared_ros2_extras_is_next_to_the_checkout():
    extras = REPO.parent / 'shared' / 'ros2-extras' / 'install.sh'
    if not extras.is_file():
        pytest.skip(f'no {extras}: the launch tests run only where the ROS 2 launch/CLI tools are installed')
    assert os.access(Path(sys.executable).parent / 'ros2', os.X_OK), 'no ros2 in the venv: run scripts/setup.sh'
    for module in ('launch', 'launch_ros', 'ros2launch', 'ros2param', 'ros2topic'):
        assert importlib.util.find_spec(module), f'{module} is not installed: run scripts/setup.sh'
