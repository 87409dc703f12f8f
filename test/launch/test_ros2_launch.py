"""The shipped launch files under the real `ros2 launch`, and the nodes under the real `ros2` CLI.

The tools come from ../shared/ros2-extras (scripts/setup.sh installs them into the venv when that
folder exists); without them every test here skips. The scripted expert drives (no learned model
to load), one short episode at a time. Waits poll a condition with a deadline; no fixed sleeps.
"""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from policytrim_ros import launcher
from policytrim_ros.launcher import NodeSpec

BIN = Path(sys.executable).parent
ROS2 = BIN / 'ros2'
if not os.access(ROS2, os.X_OK) or not all(importlib.util.find_spec(m) for m in ('launch', 'launch_ros')):
    pytest.skip('the real ROS 2 launch/CLI tools are not installed in the venv: scripts/setup.sh installs '
                'them when ../shared/ros2-extras exists next to the repository', allow_module_level=True)

psutil = pytest.importorskip('psutil')   # installed with the tools
NAMESPACE = 'pt_launch_test'
LAUNCH_TIMEOUT_S = 120.0   # start-up and 1 episode of the expert: ~10 s on 2 busy cores


def ros_env(tmp_path: Path) -> dict[str, str]:
    """launcher.ros_env (LOCALHOST discovery, this run's ROS_DOMAIN_ID) with the venv's tools first."""
    env = launcher.ros_env()
    env['PATH'] = f'{BIN}{os.pathsep}{env.get("PATH", "")}'
    env['ROS_LOG_DIR'] = str(tmp_path / 'ros_log')
    return env


def expert_params(tmp_path: Path, tasks=('reach',)) -> Path:
    """config/sim.yaml with the scripted expert and one episode of each of ``tasks``."""
    params = yaml.safe_load((launcher.package_share() / 'config' / 'sim.yaml').read_text())
    params['policy_node']['ros__parameters']['policy']['backend'] = 'expert'
    # two values no default has, to see that the file's sections reached the nodes
    params['policy_node']['ros__parameters']['execution']['max_episode_steps'] = 149
    params['sim_node']['ros__parameters']['sim']['initial_seed'] = 7
    params['episode_runner']['ros__parameters']['runner'].update(
        tasks=list(tasks), episodes_per_task=1, episode_timeout_s=60.0, discovery_timeout_s=60.0)
    path = tmp_path / 'expert.yaml'
    path.write_text(yaml.safe_dump(params))
    return path


class RosLaunch:
    """A `ros2 launch` process (its own session, SIGINT restored) with its output in a file."""

    def __init__(self, tmp_path: Path, launch_file: str, *args: str):
        self.log = tmp_path / f'{launch_file}.{time.monotonic_ns()}.log'
        self._out = open(self.log, 'w')
        self.process = subprocess.Popen(
            [str(ROS2), 'launch', 'policytrim_ros', launch_file, *args], cwd=tmp_path, env=ros_env(tmp_path),
            stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True, restore_signals=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.children: dict[int, psutil.Process] = {}

    def output(self) -> str:
        return self.log.read_text()

    def node_process(self, executable: str) -> psutil.Process | None:
        """The running child process of ``executable`` (remembered for the leftover check)."""
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.children[child.pid] = child
                if any(Path(a).name == executable for a in child.cmdline()[:2]):
                    return child
        except psutil.Error:
            pass
        return None

    def wait(self, timeout: float = LAUNCH_TIMEOUT_S) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f'ros2 launch still running after {timeout}s:\n{self.output()[-3000:]}')

    def leftovers(self) -> list[str]:
        """Node processes of this launch still alive after it exited."""
        return [' '.join(p.cmdline()[:2]) for p in self.children.values() if p.is_running()
                and p.status() != psutil.STATUS_ZOMBIE]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._out.close()


@pytest.fixture
def ros_launch(tmp_path):
    """``ros_launch(launch_file, *args)`` starts `ros2 launch`; every one is stopped at teardown."""
    started = []

    def start(launch_file, *args, path=tmp_path):
        run = RosLaunch(path, launch_file, *args)
        started.append(run)
        return run

    yield start
    for run in started:
        run.stop()


def wait_for(predicate, timeout: float = 60.0, what: str = 'condition'):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f'timed out after {timeout}s waiting for {what}')


def ros2(tmp_path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROS2), *args], env=ros_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path)


def declared_arguments(launch_file: str) -> dict[str, str | None]:
    """{name: default (None if not plain text)} of the launch arguments the checkout's launch file
    declares, from its own generate_launch_description()."""
    from launch.actions import DeclareLaunchArgument
    from launch.substitutions import TextSubstitution
    path = Path(__file__).resolve().parents[2] / 'launch' / launch_file
    spec = importlib.util.spec_from_file_location(path.stem.replace('.', '_'), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    declared = {}
    for action in module.generate_launch_description().entities:
        if isinstance(action, DeclareLaunchArgument):
            parts = action.default_value or []
            plain = all(isinstance(s, TextSubstitution) for s in parts)
            declared[action.name] = ''.join(s.text for s in parts) if plain else None
    return declared


@pytest.mark.parametrize('launch_file', ['sim.launch.py', 'deploy.launch.py', 'train.launch.py'])
def test_ros2_launch_shows_the_arguments_the_checkouts_launch_file_declares(tmp_path, launch_file):
    """The installed launch file loads under the real `ros2 launch` and is the checkout's: --show-args
    lists exactly the arguments the repository's file declares, with its literal defaults."""
    done = ros2(tmp_path, 'launch', 'policytrim_ros', launch_file, '--show-args')
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    shown = dict(re.findall(r"^    '(\w+)':\n(?:        .*\n)*?        \(default: '(.*)'\)$", done.stdout, re.M))
    declared = declared_arguments(launch_file)
    assert set(shown) == set(declared), done.stdout
    for name, default in declared.items():
        if default is not None:
            assert shown[name] == default, (name, shown[name], default)


def test_sim_launch_with_episodes_exits_0_when_the_runner_is_done(tmp_path, ros_launch):
    run = ros_launch('sim.launch.py', 'run_episodes:=true', f'params_file:={expert_params(tmp_path)}')
    wait_for(lambda: run.node_process('sim_node') or run.process.poll() is not None, 60, 'sim_node to start')
    code = run.wait()
    assert code == 0, run.output()[-3000:]
    assert 'reach-000' in run.output()          # the runner's per-episode table
    assert not run.leftovers(), run.leftovers()  # the sim and policy node were shut down with it


def test_sim_launch_exits_non_zero_when_the_runner_fails(tmp_path, ros_launch):
    run = ros_launch('sim.launch.py', 'run_episodes:=true',
                     f'params_file:={expert_params(tmp_path, tasks=("no_such_task",))}')
    wait_for(lambda: run.node_process('sim_node') or run.process.poll() is not None, 60, 'sim_node to start')
    code = run.wait()
    assert code != 0, run.output()[-3000:]
    assert "unknown task 'no_such_task'" in run.output()
    assert not run.leftovers(), run.leftovers()


def test_sim_launch_passes_horizon_to_policy_node(tmp_path, ros_launch):
    """horizon:=learned reaches policy_node: the scripted expert has no efficiency head, so the node
    refuses to start, naming why, and the launch shuts down with exit code 1."""
    run = ros_launch('sim.launch.py', 'horizon:=learned', f'params_file:={expert_params(tmp_path)}')
    code = run.wait(timeout=120)
    assert code != 0, run.output()[-3000:]
    assert 'execution.horizon learned runs the h an efficiency head picks, and the expert policy has none' \
        in run.output()
    assert not run.leftovers(), run.leftovers()


def test_sim_launch_shuts_down_when_policy_node_dies(tmp_path, ros_launch):
    run = ros_launch('sim.launch.py', f'params_file:={expert_params(tmp_path)}')
    # both nodes up and running (their start-up log lines), not just started
    wait_for(lambda: 'sim ready' in run.output() and 'expert policy' in run.output(), 60, 'the nodes to be ready')
    wait_for(lambda: run.node_process('sim_node'), 10, 'the sim_node process')
    run.node_process('policy_node').kill()
    code = run.wait(timeout=60)
    assert code != 0, run.output()[-3000:]
    assert 'policy_node exited with code -9' in run.output()
    assert not run.leftovers(), run.leftovers()


@pytest.fixture(scope='module')
def namespaced_sim(tmp_path_factory):
    """sim.launch.py in a namespace, with the robot-side topics remapped (no episode runner)."""
    tmp_path = tmp_path_factory.mktemp('ns')
    run = RosLaunch(tmp_path, 'sim.launch.py', f'namespace:={NAMESPACE}', f'params_file:={expert_params(tmp_path)}',
                    'joint_states:=robot/joint_states', 'controller:=my_arm_controller',
                    'camera_topics:=scene/image_raw,wrist/image_raw')
    yield run, tmp_path
    run.stop()


def param_get(tmp_path, node: str, name: str, timeout: float = 90.0) -> str:
    """`ros2 param get` once the node answers (it may still be starting)."""
    def get():
        got = ros2(tmp_path, 'param', 'get', '--no-daemon', node, name)
        return got.returncode == 0 and got.stdout.strip()
    return wait_for(get, timeout, f'{node} to answer for {name}')


def test_ros2_param_list_and_get_reach_the_nodes_in_a_namespace(namespaced_sim):
    run, tmp_path = namespaced_sim
    ns = f'/{NAMESPACE}'
    # values from the params file: its node sections reached the nodes in the namespace
    assert param_get(tmp_path, f'{ns}/policy_node', 'execution.max_episode_steps') == 'Integer value is: 149'
    assert param_get(tmp_path, f'{ns}/sim_node', 'sim.initial_seed') == 'Integer value is: 7'
    assert param_get(tmp_path, f'{ns}/policy_node', 'execution.n_action_steps') == 'Integer value is: 8'
    expected = {'execution.n_action_steps', 'policy.backend', 'topics.joint_states'}
    # a fresh `ros2 ... --no-daemon` may answer before it has discovered the node: poll
    wait_for(lambda: expected <= set(ros2(tmp_path, 'param', 'list', '--no-daemon',
                                          f'{ns}/policy_node').stdout.split()),
             60, f'`ros2 param list` to show {sorted(expected)}')


def test_ros2_topic_list_shows_the_remapped_topics_in_the_namespace(namespaced_sim):
    run, tmp_path = namespaced_sim
    ns = f'/{NAMESPACE}'
    expected = {f'{ns}/robot/joint_states', f'{ns}/my_arm_controller/joint_trajectory',
                f'{ns}/scene/image_raw', f'{ns}/wrist/image_raw', f'{ns}/policytrim/episode_stats',
                f'{ns}/episode/event'}

    def topics():
        listed = set(ros2(tmp_path, 'topic', 'list', '--no-daemon').stdout.split())
        return expected <= listed and listed

    listed = wait_for(topics, 90, f'topics {sorted(expected)}')
    assert not {f'{ns}/joint_states', f'{ns}/arm_controller/joint_trajectory', f'{ns}/camera/image_raw'} & listed


def test_ros2_topic_echo_once_reads_the_sims_remapped_joint_states(namespaced_sim):
    run, tmp_path = namespaced_sim
    echo = ros2(tmp_path, 'topic', 'echo', '--once', '--no-daemon', f'/{NAMESPACE}/robot/joint_states',
                'sensor_msgs/msg/JointState', timeout=90)
    assert echo.returncode == 0, echo.stderr
    assert 'joint1' in echo.stdout and 'position' in echo.stdout


@pytest.fixture
def sim_arm(tmp_path):
    """A sim_node process as the robot: joint_states, camera images, arm_controller/joint_trajectory."""
    with launcher.Launch([NodeSpec('sim_node', [launcher.params_file()])], ros_env(tmp_path),
                         log_dir=tmp_path / 'logs') as arm:
        yield arm


def test_deploy_launch_drives_a_sim_node_arm_through_the_remapped_controller(tmp_path, ros_launch, sim_arm):
    sim_yaml = launcher.params_file()
    run = ros_launch('deploy.launch.py', 'use_sim_time:=true', 'controller:=arm_controller')
    runner = NodeSpec('episode_runner', [sim_yaml], {
        'runner.tasks': ['reach'], 'runner.episodes_per_task': 1, 'runner.episode_timeout_s': 60.0,
        'runner.discovery_timeout_s': 60.0})
    done = subprocess.run(runner.command(), env=ros_env(tmp_path), capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + run.output()[-2000:]
    # success needs the arm to move: policy_node's trajectories reached sim_node's arm_controller
    assert re.search(r'\|\s*reach-000\s*\|\s*reach\s*\|\s*yes\s*\|', done.stdout), done.stdout
    assert param_get(tmp_path, '/policy_node', 'execution.chunk_size') == 'Integer value is: 16'   # deploy.yaml's H
    # a fresh `ros2 ... --no-daemon` may answer before it has discovered everything: poll
    wait_for(lambda: 'controller.name' in ros2(tmp_path, 'param', 'list', '--no-daemon',
                                               '/policy_node').stdout.split(), 60, '`ros2 param list /policy_node`')
    assert param_get(tmp_path, '/policy_node', 'controller.name') == 'String value is: arm_controller'
    def set_h():
        got = ros2(tmp_path, 'param', 'set', '--no-daemon', '/policy_node', 'execution.n_action_steps', '8')
        return 'Node not found' not in got.stderr and got.stdout + got.stderr
    refused = wait_for(set_h, 60, '`ros2 param set /policy_node ...` to find the node')
    assert 'read-only' in refused, refused   # refused, never accepted and ignored
    assert param_get(tmp_path, '/policy_node', 'execution.n_action_steps') == 'Integer value is: 4'   # deploy.yaml's h

    def topics():
        listed = set(ros2(tmp_path, 'topic', 'list', '--no-daemon').stdout.split())
        return '/arm_controller/joint_trajectory' in listed and listed

    assert '/joint_trajectory_controller/joint_trajectory' not in wait_for(topics, 60, 'the remapped trajectory topic')
    run.stop()
    assert run.process.returncode == 0, run.output()[-3000:]


def test_train_launch_runs_the_trainer_through_the_nodes_and_records_every_episode(tmp_path, ros_launch):
    """train.launch.py: sim_node + policy_node + trainer_node + recorder_node; 1 iteration of a group
    of 2 on the shipped baseline, then the launch exits 0 with the run's checkpoint, one bag per
    training episode (each read back with its provenance) and no node left behind."""
    from policytrim_ros.data.bag import read_episode_bag
    config = tmp_path / 'train.yaml'
    config.write_text(yaml.safe_dump({
        'init': 'package://policytrim_ros/models/bc-wrist-h32-dagger', 'tasks': ['reach'], 'iterations': 1,
        'groups_per_iteration': 1, 'group_size': 2, 'base_n_action_steps': 8, 'acceptance_ratio_count': 2,
        'log_std': -2.5, 'workers': 0, 'checkpoint_every': 1, 'out_dir': str(tmp_path / 'run')}))
    run = ros_launch('train.launch.py', f'config:={config}')
    code = run.wait(timeout=240)
    assert code == 0, run.output()[-4000:]
    assert (tmp_path / 'run' / 'last' / 'model.safetensors').is_file()
    bags = sorted(p for p in (tmp_path / 'run' / 'bags').iterdir() if p.name.startswith('train-'))
    assert len(bags) == 2, (bags, run.output()[-3000:])
    for bag in bags:
        episode = read_episode_bag(bag)
        assert episode.calls and {c.weights_version for c in episode.calls} == {1}
        assert all(c.sampling_seed >= 0 for c in episode.calls)
    assert not run.leftovers(), run.leftovers()
