"""The repo builds as a ROS 2 package with colcon (the path a robot with ROS 2 takes).

colcon-core/colcon-ros from PyPI and the ROS 2 wheels in the venv stand in for a ROS install. The
built workspace must hold the generated interfaces, the node wrappers `ros2 run` uses, and the
launch/ and config/ files `ros2 launch` needs.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXECUTABLES = ['sim_node', 'policy_node', 'episode_runner', 'policytrim']


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    if shutil.which('colcon', path=str(Path(sys.executable).parent)) is None:
        pytest.fail('colcon is not installed in the venv; run scripts/setup.sh')
    ws = tmp_path_factory.mktemp('ws')
    copy_checkout(ws / 'src' / 'policytrim_ros')
    env = dict(os.environ, AMENT_PREFIX_PATH=sys.prefix, CMAKE_PREFIX_PATH=sys.prefix)
    colcon = str(Path(sys.executable).parent / 'colcon')
    result = subprocess.run([colcon, 'build', '--cmake-args', f'-DPython3_EXECUTABLE={sys.executable}',
                             '-DBUILD_TESTING=OFF', '-Wno-dev'], cwd=ws, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return ws / 'install' / 'policytrim_ros'


def test_colcon_installs_launch_config_and_node_wrappers(workspace):
    share = workspace / 'share' / 'policytrim_ros'
    assert {'sim.launch.py', 'deploy.launch.py', 'robot.launch.py', 'gazebo.launch.py'} <= {
        p.name for p in (share / 'launch').iterdir()}
    assert {'sim.yaml', 'deploy.yaml', 'gazebo.yaml', 'controllers.yaml'} <= {p.name for p in (share / 'config').iterdir()}
    assert (share / 'urdf' / 'policytrim_arm.urdf.xacro').is_file() and (share / 'worlds' / 'arm_table.sdf').is_file()
    assert (workspace / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'policytrim_ros').exists()
    for exe in EXECUTABLES:
        assert os.access(workspace / 'lib' / 'policytrim_ros' / exe, os.X_OK), exe


def test_colcon_generated_messages_import_and_serialize(workspace):
    site = next(workspace.glob('lib/python3*/site-packages'))
    code = (
        'import policytrim_ros.msg as m, policytrim_ros.srv as s\n'
        'from rclpy.serialization import serialize_message, deserialize_message\n'
        f'assert m.__file__.startswith({str(site)!r}), m.__file__\n'
        'e = m.EpisodeStats(episode_id="x", steps=7, chunk_utilization=0.25)\n'
        'assert deserialize_message(serialize_message(e), m.EpisodeStats) == e\n'
        'assert s.ResetEpisode.Request(task="push").task == "push"\n'
        'import policytrim_ros.nodes.policy_node\n')
    env = dict(os.environ, PYTHONPATH=str(site),
               LD_LIBRARY_PATH=f'{workspace / "lib"}:{os.environ.get("LD_LIBRARY_PATH", "")}')
    result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, cwd='/')
    assert result.returncode == 0, result.stderr


def copy_checkout(src: Path) -> None:
    """The repository's tracked and untracked (not ignored) files, as a clone would have them."""
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, src / f)


def test_colcon_builds_with_the_checkouts_own_venv_inside_the_workspace(tmp_path):
    """The README's colcon steps without a ROS install: the checkout in ws/src/policytrim_ros keeps
    its .venv (scripts/setup.sh's; here a link to this venv, seen through the link as a user's
    would be), which stands in for ROS; colcon must build, and install/setup.sh must find the
    package."""
    checkout = tmp_path / 'ws' / 'src' / 'policytrim_ros'
    copy_checkout(checkout)
    (checkout / '.venv').symlink_to(sys.prefix, target_is_directory=True)
    readme = (REPO / 'README.md').read_text().splitlines()
    first = next(i for i, line in enumerate(readme) if line.strip().startswith('cd ~/ws && V='))
    lines = [line.strip() for line in readme[first:first + 2]]
    assert lines[1].startswith('colcon build') and lines[1].endswith('&& . install/setup.sh'), lines
    script = '\n'.join([
        'set -e',
        # the README's two lines, one command a line (`set -e` does not stop inside an && list)
        lines[0].replace('cd ~/ws', 'cd "$WS"'),
        lines[1].replace(' && . install/setup.sh', ''),
        '. install/setup.sh',
        'python -c "from ament_index_python.packages import get_package_prefix as p; print(p(\'policytrim_ros\'))"'])
    env = {k: v for k, v in os.environ.items() if k not in ('AMENT_PREFIX_PATH', 'CMAKE_PREFIX_PATH', 'VIRTUAL_ENV')}
    result = subprocess.run(['bash', '-c', script], env=dict(env, WS=str(tmp_path / 'ws')), capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    install = tmp_path / 'ws' / 'install' / 'policytrim_ros'
    assert result.stdout.strip().splitlines()[-1] == str(install)
    assert not (tmp_path / 'ws' / 'build' / '.venv').exists()   # colcon skipped the venv (COLCON_IGNORE)
    for exe in EXECUTABLES:
        assert os.access(install / 'lib' / 'policytrim_ros' / exe, os.X_OK), exe
