"""Helpers for the robot description and bring-up checks: the checkout as an ament package, the
real tools.

The checks run the real tools: the `xacro` command (PyPI xacro), `check_urdf` (Debian
liburdfdom-tools) and `ign sdf` (Debian ignition-tools + libsdformat-dev). scripts/setup.sh installs
them; a missing one fails the test (run scripts/setup.sh), unless this machine cannot install
Debian packages (not root, no passwordless sudo): then it skips, naming the package.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
XACRO = REPO / 'urdf' / 'policytrim_arm.urdf.xacro'
WORLD = REPO / 'worlds' / 'arm_table.sdf'
CONTROLLERS = REPO / 'config' / 'controllers.yaml'
GAZEBO = 'gz_ros2_control/GazeboSimSystem'
MOCK = 'mock_components/GenericSystem'
DRIVER = 'my_arm_driver/MyArmSystem'
PLUGINS = (GAZEBO, MOCK, DRIVER)
"""Every kind of hardware_plugin: Gazebo, hardware-free, a real arm's driver."""


def _can_install_debian_packages() -> bool:
    if os.geteuid() == 0:
        return True
    return bool(shutil.which('sudo')) and subprocess.run(['sudo', '-n', 'true'], capture_output=True).returncode == 0


def require_tool(name: str, package: str) -> str:
    """The path of the command ``name``; fails (or skips where setup.sh could not install
    ``package``) when it is missing."""
    found = shutil.which(name) or (shutil.which(name, path=str(Path(sys.executable).parent)))
    if found:
        return found
    if _can_install_debian_packages() or name == 'xacro':
        pytest.fail(f'`{name}` is missing: run scripts/setup.sh (it installs {package})')
    pytest.skip(f'`{name}` is missing and this machine cannot install {package} (not root, no sudo)')


SHARED = ('package.xml', 'launch', 'config', 'urdf', 'worlds', 'models', 'msg', 'srv')
"""The checkout's folders the package installs into share/policytrim_ros."""


def make_overlay(root: Path) -> Path:
    """An ament prefix whose share/policytrim_ros is this checkout (so `$(find policytrim_ros)` and
    `ros2 launch policytrim_ros ...` use the checkout's files, not an installed copy) and whose
    lib/policytrim_ros holds the installed node executables (they run the checkout's code through
    PYTHONPATH)."""
    prefix = root / 'overlay'
    (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages').mkdir(parents=True, exist_ok=True)
    (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'policytrim_ros').touch()
    share = prefix / 'share' / 'policytrim_ros'
    share.mkdir()
    # what the package installs, not the whole checkout (its .venv holds another copy); real folders of
    # linked files: `ros2 launch` does not walk into a linked folder when it looks for a file
    for name in SHARED:
        source = REPO / name
        files = sorted(source.rglob('*')) if source.is_dir() else [source] if source.exists() else []
        for path in (p for p in files if p.is_file()):
            link = share / path.relative_to(REPO)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    installed = Path(sys.prefix) / 'lib' / 'policytrim_ros'
    if installed.is_dir():
        (prefix / 'lib').mkdir(exist_ok=True)
        (prefix / 'lib' / 'policytrim_ros').symlink_to(installed)
    return prefix


def run_xacro(env: dict, source: Path, **args: str) -> subprocess.CompletedProcess:
    xacro = require_tool('xacro', 'xacro (PyPI, requirements.txt)')
    return subprocess.run([xacro, str(source), *(f'{k}:={v}' for k, v in args.items())], env=env,
                          capture_output=True, text=True, timeout=60)
