"""Only nodes/ (and launch_support.py, for the launch files) may import ROS: importing any other
module of the package, found by walking the source tree, leaves rclpy out of sys.modules."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / 'policytrim_ros'
ROS_SIDE = ('policytrim_ros.nodes', 'policytrim_ros.launch_support')


def core_modules() -> list[str]:
    """Every hand-written module outside ``ROS_SIDE``, by its dotted name (``__main__`` scripts left out:
    importing one runs it)."""
    names = []
    for path in sorted(ROOT.rglob('*.py')):
        if path.name == '__main__.py':
            continue
        parts = list(path.relative_to(ROOT.parent).with_suffix('').parts)
        name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        if not any(name == side or name.startswith(side + '.') for side in ROS_SIDE):
            names.append(name)
    return names


def test_core_modules_are_found():
    core = core_modules()
    assert {'policytrim_ros.cli', 'policytrim_ros.envs.arm', 'policytrim_ros.policy.factory'} <= set(core)
    assert not [m for m in core if m.startswith(ROS_SIDE)]


def test_importing_the_core_does_not_import_rclpy():
    code = ('import sys\n' + ''.join(f'import {m}\n' for m in core_modules()) +
            'bad = [m for m in sys.modules if m == "rclpy" or m.startswith("rclpy.")]\n'
            'assert not bad, bad\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT.parent)
    assert result.returncode == 0, result.stderr
