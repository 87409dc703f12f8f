"""Smoke-test fixtures: a simulated kill at any file-system step of a run."""
import os
import shutil
from pathlib import Path

import pytest

import policytrim_ros.policy.checkpoint as checkpoint


class Killed(BaseException):
    """The process died here (a BaseException, so no handler of the code under test catches it)."""


class FileSteps:
    """Counts the file-system steps (file writes, renames, directory creations and deletions) since
    ``count`` was last set to 0, and raises ``Killed`` at step ``kill_at`` (0 = never)."""

    Killed = Killed
    count = 0
    kill_at = 0


@pytest.fixture()
def file_steps(monkeypatch):
    """A FileSteps over os.replace, os.rename, os.mkdir, shutil.rmtree, Path.write_text and the
    safetensors writer: a kill between any two of them is a kill at any instant of a save, as far
    as what is on disk can tell."""
    steps = FileSteps()

    def counted(function):
        def step(*args, **kwargs):
            steps.count += 1
            if steps.count == steps.kill_at:
                raise Killed(f'killed before file-system step {steps.count}')
            return function(*args, **kwargs)
        return step

    for owner, name in ((os, 'replace'), (os, 'rename'), (os, 'mkdir'), (shutil, 'rmtree'), (Path, 'write_text'),
                        (checkpoint, 'save_file')):
        monkeypatch.setattr(owner, name, counted(getattr(owner, name)))
    return steps
