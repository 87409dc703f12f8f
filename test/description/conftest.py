"""Fixtures of the robot description and bring-up checks (helpers: description_support.py)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from description_support import PLUGINS, REPO, XACRO, make_overlay, run_xacro


@pytest.fixture(scope='session')
def ament_env(tmp_path_factory) -> dict[str, str]:
    """os.environ with the checkout first on AMENT_PREFIX_PATH and the venv's tools on PATH."""
    prefix = make_overlay(tmp_path_factory.mktemp('ament'))
    env = dict(os.environ)
    env['AMENT_PREFIX_PATH'] = os.pathsep.join(p for p in (str(prefix), env.get('AMENT_PREFIX_PATH', sys.prefix)) if p)
    env['PATH'] = f'{Path(sys.executable).parent}{os.pathsep}{env.get("PATH", "")}'
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(REPO), env.get('PYTHONPATH', '')) if p)
    return env


@pytest.fixture(scope='session')
def urdf_files(ament_env, tmp_path_factory) -> dict[str, Path]:
    """{hardware_plugin: the URDF xacro expanded with it}, for every plugin in PLUGINS."""
    out = tmp_path_factory.mktemp('urdf')
    files = {}
    for plugin in PLUGINS:
        done = run_xacro(ament_env, XACRO, hardware_plugin=plugin)
        assert done.returncode == 0, done.stderr
        files[plugin] = out / f'{plugin.replace("/", "_")}.urdf'
        files[plugin].write_text(done.stdout)
    return files
