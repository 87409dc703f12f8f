"""Fixtures for node tests over real DDS: node processes (``launch``) and an in-process test node
(``harness``); the helpers live in harness.py (a module of its own name: every test folder has a
conftest, so ``from conftest import`` would pick whichever was loaded last)."""
from __future__ import annotations

import pytest

from policytrim_ros import launcher

from harness import Harness


@pytest.fixture
def harness():
    h = Harness()
    yield h
    h.close()


@pytest.fixture
def launch(tmp_path):
    """Start node processes: ``launch([NodeSpec, ...])``; all are stopped at teardown."""
    launches = []

    def start(specs):
        run = launcher.Launch(specs, launcher.ros_env(), log_dir=tmp_path / 'logs').__enter__()
        launches.append(run)
        return run

    yield start
    for run in launches:
        run.stop()
