"""A small process launcher standing in for ``ros2 launch`` where the launch package is missing.

It starts the installed node executables (``<prefix>/lib/policytrim_ros/<exe>``, where launch_ros
looks too) with ``--ros-args`` parameter files and overrides, in a ROS environment that keeps DDS on
this machine, and stops them with SIGINT -> SIGTERM -> SIGKILL. No rclpy import.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from policytrim_ros import resources

PACKAGE = 'policytrim_ros'


def ros_env(domain_id: int | None = None, base: dict | None = None) -> dict[str, str]:
    """Environment for ROS processes: LOCALHOST discovery, a domain id, the ament index, headless GL."""
    env = dict(os.environ if base is None else base)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = env.get('ROS_AUTOMATIC_DISCOVERY_RANGE') or 'LOCALHOST'
    if domain_id is not None:
        env['ROS_DOMAIN_ID'] = str(domain_id)
    env.setdefault('AMENT_PREFIX_PATH', sys.prefix)
    env.setdefault('MUJOCO_GL', 'egl')
    env.setdefault('PYTHONUNBUFFERED', '1')
    return env


def random_domain_id() -> int:
    """A ROS_DOMAIN_ID for an isolated run (1-100; 0 is everyone's default)."""
    return random.randint(1, 100)


def run_env(base: dict | None = None) -> tuple[dict[str, str], str]:
    """``ros_env`` for one run of node processes, and a line that says its ROS_DOMAIN_ID.

    A ROS_DOMAIN_ID the user set is kept (their other ROS 2 processes, and the runs they keep apart
    with it); only when it is unset or empty is one picked at random, so that the run's nodes do not
    talk to the default domain's.
    """
    source = os.environ if base is None else base
    given = (source.get('ROS_DOMAIN_ID') or '').strip()
    if given:
        return ros_env(base=base), f'ROS_DOMAIN_ID={given} (from the environment)'
    domain = random_domain_id()
    return ros_env(domain, base), f'ROS_DOMAIN_ID={domain} (picked at random: ROS_DOMAIN_ID is not set)'


def package_share() -> Path:
    """share/policytrim_ros of the installed package."""
    return resources.package_share(PACKAGE)


def params_file(path: str | Path | None = None) -> Path:
    """``path``, or the installed ``config/sim.yaml`` (the embedded arm's parameter file) when None."""
    return Path(path) if path else package_share() / 'config' / 'sim.yaml'


def executable(name: str) -> Path:
    """The installed node executable ``lib/policytrim_ros/<name>``."""
    from ament_index_python.packages import get_package_prefix
    os.environ.setdefault('AMENT_PREFIX_PATH', sys.prefix)
    path = Path(get_package_prefix(PACKAGE)) / 'lib' / PACKAGE / name
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f'{path} is missing or not executable; run scripts/setup.sh')
    return path


@dataclass
class NodeSpec:
    """One node process: executable, parameter files and ``-p`` overrides."""

    executable: str
    params_files: list[str | Path] = field(default_factory=list)
    overrides: dict[str, object] = field(default_factory=dict)

    def command(self) -> list[str]:
        cmd = [str(executable(self.executable)), '--ros-args']
        for f in self.params_files:
            cmd += ['--params-file', str(f)]
        for key, value in self.overrides.items():
            cmd += ['-p', f'{key}:={json.dumps(value)}']
        return cmd


class Launch:
    """Start several node processes; ``stop()`` (or leaving the ``with`` block) ends them all."""

    def __init__(self, specs: list[NodeSpec], env: dict[str, str], log_dir: Path | None = None):
        self.specs, self.env, self.log_dir = specs, env, log_dir
        self.processes: dict[str, subprocess.Popen] = {}
        self._logs: list = []

    def __enter__(self) -> 'Launch':
        for spec in self.specs:
            out = None
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                out = open(self.log_dir / f'{spec.executable}.log', 'w')
                self._logs.append(out)
            self.processes[spec.executable] = subprocess.Popen(
                spec.command(), env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, timeout: float = 10.0) -> dict[str, int]:
        """SIGINT every process, then SIGTERM and SIGKILL stragglers; return the exit codes."""
        codes = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            alive = {n: p for n, p in self.processes.items() if p.poll() is None}
            for p in alive.values():
                p.send_signal(sig)
            for n, p in alive.items():
                try:
                    p.wait(timeout=timeout / 2 if sig != signal.SIGKILL else None)
                except subprocess.TimeoutExpired:
                    pass
        for n, p in self.processes.items():
            codes[n] = p.returncode
        for f in self._logs:
            f.close()
        return codes
