"""launch/robot.launch.py and launch/gazebo.launch.py under the real `ros2 launch`.

Gazebo, ros_gz and ros2_control's C++ nodes cannot be installed here, so a dry run replaces them
with stub packages (robot_state_publisher, controller_manager, ros_gz_sim, ros_gz_bridge) whose
executables record their command line and parameter files and then wait (or exit 0, like a spawner
and `create`). Everything else is real: the launch files, xacro run by the launch's Command
substitution, the event handlers that order the bring-up, policy_node (the scripted expert), the
`ros2 topic pub` of the instruction. The tools come from ../shared/ros2-extras (scripts/setup.sh).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from description_support import CONTROLLERS, REPO, WORLD, require_tool

BIN = Path(sys.executable).parent
ROS2 = BIN / 'ros2'
if not os.access(ROS2, os.X_OK) or not all(importlib.util.find_spec(m) for m in ('launch', 'launch_ros')):
    pytest.skip('the real ROS 2 launch/CLI tools are not installed in the venv: scripts/setup.sh installs '
                'them when ../shared/ros2-extras exists next to the repository', allow_module_level=True)

STUBS = {'robot_state_publisher': ['robot_state_publisher'], 'controller_manager': ['ros2_control_node', 'spawner'],
         'ros_gz_sim': ['create', 'gz'], 'ros_gz_bridge': ['parameter_bridge']}
FINISHING = {'spawner', 'create'}
"""Stubs that exit 0 after recording, as the real ones do once their work is done."""
INSTRUCTION = 'reach the red target'
STUB = '''#!{python}
import json, os, signal, sys, time
name = {name!r}
record = {{'argv': sys.argv[1:], 'time': time.time(), 'params': {{}}}}
for flag, value in zip(sys.argv, sys.argv[1:]):
    if flag == '--params-file':
        record['params'][value] = open(value).read()
with open(os.path.join(os.environ['STUB_LOG'], name + '.json'), 'w') as f:
    json.dump(record, f)
if name in os.environ.get('STUB_FAIL', '').split(','):
    sys.exit(1)
if name in {finishing!r}:
    sys.exit(0)
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
'''
GZ_SIM_LAUNCH = '''
"""Stub of ros_gz_sim's gz_sim.launch.py: the same arguments, a recording `gz sim`."""
import os
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration

def generate_launch_description():
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    return LaunchDescription([
        DeclareLaunchArgument('gz_args', default_value=''),
        DeclareLaunchArgument('on_exit_shutdown', default_value='false'),
        ExecuteProcess(cmd=[os.path.join(here, 'lib', 'ros_gz_sim', 'gz'), 'sim', LaunchConfiguration('gz_args')],
                       name='gz_sim'),
    ])
'''


@pytest.fixture(scope='module')
def stub_prefix(tmp_path_factory) -> Path:
    prefix = tmp_path_factory.mktemp('stubs')
    index = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
    index.mkdir(parents=True)
    for package, executables in STUBS.items():
        (index / package).touch()
        (prefix / 'lib' / package).mkdir(parents=True)
        (prefix / 'share' / package).mkdir(parents=True)
        for exe in executables:
            script = prefix / 'lib' / package / exe
            script.write_text(STUB.format(python=sys.executable, name=exe, finishing=sorted(FINISHING)))
            script.chmod(0o755)
    (prefix / 'share' / 'ros_gz_sim' / 'launch').mkdir()
    (prefix / 'share' / 'ros_gz_sim' / 'launch' / 'gz_sim.launch.py').write_text(textwrap.dedent(GZ_SIM_LAUNCH))
    return prefix


@pytest.fixture
def launch_env(ament_env, stub_prefix, tmp_path) -> dict[str, str]:
    env = dict(ament_env)
    env['AMENT_PREFIX_PATH'] = f'{stub_prefix}{os.pathsep}{env["AMENT_PREFIX_PATH"]}'
    env['STUB_LOG'] = str(tmp_path / 'stubs')
    env['ROS_LOG_DIR'] = str(tmp_path / 'ros_log')
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    (tmp_path / 'stubs').mkdir()
    return env


def expert_params(tmp_path: Path, config: str) -> Path:
    """config/<config> with the scripted expert (no model to load: fast start-up)."""
    params = yaml.safe_load((REPO / 'config' / config).read_text())
    params['policy_node']['ros__parameters']['policy'] = {'backend': 'expert'}
    path = tmp_path / f'expert-{config}'
    path.write_text(yaml.safe_dump(params))
    return path


class Launch:
    """`ros2 launch policytrim_ros <file> <args>` in its own session, SIGINT restored, output in a file."""

    def __init__(self, env: dict, tmp_path: Path, launch_file: str, *args: str):
        self.env, self.log = env, tmp_path / f'{launch_file}.log'
        self._out = open(self.log, 'w')
        self.process = subprocess.Popen(
            [str(ROS2), 'launch', 'policytrim_ros', launch_file, *args], cwd=tmp_path, env=env, stdout=self._out,
            stderr=subprocess.STDOUT, start_new_session=True, restore_signals=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if text in self.output():
                return
            time.sleep(0.1)
        assert text in self.output(), f'no {text!r} within {timeout}s:\n{self.output()[-4000:]}'

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._out.close()
        return self.process.returncode

    def record(self, stub: str) -> dict:
        path = Path(self.env['STUB_LOG']) / f'{stub}.json'
        assert path.is_file(), f'{stub} was not started:\n{self.output()[-3000:]}'
        return json.loads(path.read_text())


@pytest.fixture
def ros_launch(launch_env, tmp_path):
    started = []

    def start(launch_file, *args):
        started.append(Launch(launch_env, tmp_path, launch_file, *args))
        return started[-1]

    yield start
    for run in started:
        run.stop()


def node_parameters(record: dict) -> dict:
    """The parameters launch_ros passed a stub node, merged from its parameter files."""
    merged = {}
    for text in record['params'].values():
        for section in (yaml.safe_load(text) or {}).values():
            merged.update(section.get('ros__parameters', {}))
    return merged


def shown_arguments(env: dict, launch_file: str) -> dict[str, str]:
    done = subprocess.run([str(ROS2), 'launch', 'policytrim_ros', launch_file, '--show-args'], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return dict(re.findall(r"^    '(\w+)':\n(?:        .*\n)*?        \(default: '(.*)'\)$", done.stdout, re.M))


BRINGUP_ARGUMENTS = {'description_file', 'controllers_file', 'params_file', 'spawn_controllers', 'instruction',
                     'joint_states', 'camera_topics', 'controller'}


def test_ros2_launch_show_args_lists_the_bringup_arguments(launch_env):
    """Both files load under the real `ros2 launch` and show their arguments with the checkout's defaults."""
    robot = shown_arguments(launch_env, 'robot.launch.py')
    assert set(robot) == BRINGUP_ARGUMENTS | {
        'hardware_plugin', 'use_sim_time', 'start_robot_state_publisher', 'start_controller_manager'}
    assert robot['hardware_plugin'] == 'mock_components/GenericSystem' and robot['use_sim_time'] == 'false'
    assert Path(robot['params_file']).name == 'deploy.yaml'
    gazebo = shown_arguments(launch_env, 'gazebo.launch.py')
    assert set(gazebo) == BRINGUP_ARGUMENTS | {'world', 'headless', 'gz_args'}
    assert Path(gazebo['world']).resolve() == WORLD.resolve() and Path(gazebo['params_file']).name == 'gazebo.yaml'
    assert Path(gazebo['controllers_file']).resolve() == CONTROLLERS.resolve()


def param_get(env: dict, node: str, name: str, timeout: float = 60.0) -> str:
    """`ros2 param get` once the node answers (a fresh `--no-daemon` call may not have discovered it)."""
    deadline = time.monotonic() + timeout
    while True:
        got = subprocess.run([str(ROS2), 'param', 'get', '--no-daemon', node, name], env=env, capture_output=True,
                             text=True, timeout=60)
        if got.returncode == 0 or time.monotonic() > deadline:
            return got.stdout.strip() or got.stderr.strip()
        time.sleep(0.2)


def check_description(description: str, tmp_path: Path, plugin: str) -> None:
    urdf = tmp_path / 'robot_description.urdf'
    urdf.write_text(description)
    done = subprocess.run([require_tool('check_urdf', 'liburdfdom-tools'), str(urdf)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f'<plugin>{plugin}</plugin>' in description


def test_robot_launch_brings_up_ros2_control_then_the_policy(ros_launch, tmp_path):
    run = ros_launch('robot.launch.py', f'params_file:={expert_params(tmp_path, "deploy.yaml")}',
                     f'instruction:={INSTRUCTION}')
    run.wait_for(f'"{INSTRUCTION}"')     # policy_node started its episode from the published instruction
    rsp = node_parameters(run.record('robot_state_publisher'))
    check_description(rsp['robot_description'], tmp_path, 'mock_components/GenericSystem')
    assert rsp['use_sim_time'] is False
    manager = run.record('ros2_control_node')
    assert any(Path(p).resolve() == CONTROLLERS.resolve() for p in manager['params'])
    assert '~/robot_description:=/robot_description' in manager['argv']
    spawner = run.record('spawner')
    assert spawner['argv'][:6] == ['joint_state_broadcaster', 'arm_controller', '--controller-manager',
                                   '/controller_manager', '--param-file', spawner['argv'][5]]
    assert Path(spawner['argv'][5]).resolve() == CONTROLLERS.resolve()
    out = run.output()
    # policy_node starts only once the spawner is done (controllers active)
    assert out.index('[spawner-') < out.index('process has finished cleanly') < out.index('[policy_node-')
    assert run.stop() == 0, out[-3000:]


def test_robot_launch_fails_and_starts_no_policy_when_the_spawner_fails(ros_launch, launch_env, tmp_path):
    launch_env['STUB_FAIL'] = 'spawner'
    run = ros_launch('robot.launch.py', f'params_file:={expert_params(tmp_path, "deploy.yaml")}')
    assert run.process.wait(timeout=90) == 1, run.output()[-3000:]
    assert 'the controller spawner exited with code 1' in run.output()
    assert '[policy_node-' not in run.output()


def test_gazebo_launch_spawns_bridges_and_starts_the_policy_on_sim_time(ros_launch, launch_env, tmp_path):
    run = ros_launch('gazebo.launch.py', f'params_file:={expert_params(tmp_path, "gazebo.yaml")}', 'headless:=true',
                     f'instruction:={INSTRUCTION}')
    run.wait_for(f'"{INSTRUCTION}"')
    gz_args = run.record('gz')['argv']   # what ros_gz_sim's gz_sim.launch.py hands `gz sim`
    assert gz_args[0] == 'sim' and gz_args[1].split()[:3] == ['-r', '-s', '--headless-rendering']
    assert Path(gz_args[1].split()[-1]).resolve() == WORLD.resolve()
    assert run.record('create')['argv'][:4] == ['-topic', 'robot_description', '-name', 'policytrim_arm']
    bridge = run.record('parameter_bridge')
    assert bridge['argv'][:4] == ['/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock',
                                  '/scene_camera/image@sensor_msgs/msg/Image[gz.msgs.Image',
                                  '/wrist_camera/image@sensor_msgs/msg/Image[gz.msgs.Image',
                                  '/workspace_camera/image@sensor_msgs/msg/Image[gz.msgs.Image']
    rsp = node_parameters(run.record('robot_state_publisher'))
    check_description(rsp['robot_description'], tmp_path, 'gz_ros2_control/GazeboSimSystem')
    assert rsp['use_sim_time'] is True and node_parameters(bridge)['use_sim_time'] is True
    assert 'gz_ros2_control-system' in rsp['robot_description']
    out = run.output()
    assert out.index('[create-') < out.index('[spawner-') < out.index('[policy_node-')
    assert param_get(launch_env, '/policy_node', 'use_sim_time') == 'Boolean value is: True'
    assert run.stop() == 0, out[-3000:]
