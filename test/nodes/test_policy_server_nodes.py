"""Bring-your-own-policy paths through the nodes over DDS.

- The remote backend in policy_node against ``policytrim serve`` on loopback runs the demo's tasks
  with the success, steps and inference calls of the in-process backend on the same seeds; a
  server killed mid-episode ends it with end_reason server_lost and a hold, and everything the
  node sent passes every distro's real joint_trajectory_controller rules.
- The plug-in example with a model that never returns: events, the next instruction, the hold and
  shutdown all happen while the call is in flight (it runs off the executor thread), and a call
  past episode.inference_timeout_s ends the episode with its own end_reason.
"""
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from policytrim_ros import launcher
from policytrim_ros.config import from_dict, load_yaml, ros_parameters
from policytrim_ros.envs.arm import ArmEnv
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.execution import jtc
from policytrim_ros.execution.config import ExecutionConfig
from policytrim_ros.execution.episode import run_episode
from policytrim_ros.execution.metrics import read_jsonl
from policytrim_ros.launcher import NodeSpec
from policytrim_ros.msg import ChunkStats, EpisodeEvent, EpisodeStats
from policytrim_ros.nodes.runtime import LATCHED
from policytrim_ros.policy.torch_policy import TorchVLAPolicy
from policytrim_ros.robots.arm import JOINT_NAMES
from policytrim_ros.srv import ResetEpisode

from harness import node_log, wait_for
from test_policy_node import joint_state

CHECKPOINT = 'package://policytrim_ros/models/bc-wrist-h32-dagger'   # the demo's policy
TASKS, SEED, H, h = ['reach', 'push', 'pick_place'], 1000, 32, 8
EXAMPLE = 'policytrim_ros.policy.examples.move_to_pose:MoveToPosePolicy'


@pytest.fixture
def policy_server(tmp_path):
    """``policy_server(checkpoint)`` -> (process, port): ``policytrim serve`` on a free loopback port."""
    started = []

    def start(checkpoint):
        log = open(tmp_path / 'serve.log', 'w')
        process = subprocess.Popen([sys.executable, '-m', 'policytrim_ros.cli', 'serve', checkpoint, '--port', '0',
                                    '--num-threads', '1'], env=launcher.ros_env(), stdout=subprocess.PIPE,
                                   stderr=log, text=True)
        started.append((process, log))
        line = process.stdout.readline()   # printed once it listens, after its warm-up call
        match = re.search(r'on ws://127\.0\.0\.1:(\d+)', line)
        assert match, (line, (tmp_path / 'serve.log').read_text()[-2000:])
        return process, int(match.group(1))

    yield start
    for process, log in started:
        process.kill()
        process.wait()
        process.stdout.close()
        log.close()


def shipped_rules():
    shipped = yaml.safe_load((launcher.package_share() / 'config' / 'controllers.yaml').read_text())
    settings = {k: v for k, v in shipped['arm_controller']['ros__parameters'].items() if k in jtc.PARAMETERS}
    return [jtc.ControllerRules.for_distro(d, JOINT_NAMES, **settings) for d in jtc.DISTROS]


def run_runner(params, tmp_path, tasks, name):
    runner = NodeSpec('episode_runner', [params], {
        'runner.tasks': tasks, 'runner.episodes_per_task': 1, 'runner.seed': SEED,
        'runner.summary_path': str(tmp_path / f'{name}.json'), 'runner.episode_timeout_s': 90.0})
    return subprocess.Popen(runner.command(), env=launcher.ros_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_remote_backend_against_policytrim_serve_matches_in_process_then_a_killed_server_holds(
        tmp_path, harness, launch, policy_server):
    server, port = policy_server(CHECKPOINT)
    params = launcher.package_share() / 'config' / 'sim.yaml'
    log = tmp_path / 'episodes.jsonl'
    sent = harness.record(JointTrajectory, 'arm_controller/joint_trajectory', QoSProfile(depth=1000))
    calls = harness.record(ChunkStats, 'policytrim/chunk_stats', QoSProfile(depth=1000))
    launch([NodeSpec('sim_node', [params], {}),
            NodeSpec('policy_node', [params], {
                'policy.backend': 'remote', 'policy.remote.uri': f'ws://127.0.0.1:{port}',
                'execution.chunk_size': H, 'execution.n_action_steps': h, 'episode.log_path': str(log)})])
    wait_for(lambda: harness.node.count_publishers('arm_controller/joint_trajectory'), 60.0, 'policy_node')
    done = run_runner(params, tmp_path, TASKS, 'summary')
    _, stderr = done.communicate(timeout=300)
    assert done.returncode == 0, stderr[-2000:]
    assert 'remote policy: H=32 h=8' in node_log(tmp_path, 'policy_node')

    env = ArmEnv(from_dict(EnvConfig, ros_parameters(load_yaml(params), 'sim_node')['env']))
    local = TorchVLAPolicy(str(launcher.package_share() / 'models' / 'bc-wrist-h32-dagger'))
    core = [run_episode(env, local, ExecutionConfig(H, h, 0.1, 150), task, SEED, window_end='moving')[0]
            for task in TASKS]
    ros = read_jsonl(log)
    assert [(e.success, e.steps, e.inference_calls) for e in ros] == \
        [(c.success, c.steps, c.inference_calls) for c in core]
    assert sum(e.success for e in ros) >= 2      # the shipped policy does these tasks: a real comparison

    # the server dies during the next episode: it ends with server_lost, and the arm holds
    before = len(calls)
    reset = harness.node.create_client(ResetEpisode, 'sim/reset_episode')
    assert reset.wait_for_service(timeout_sec=10.0)
    reset.call_async(ResetEpisode.Request(task='push', seed=SEED, episode_id='killed-server'))
    wait_for(lambda: len(calls) >= before + 2, 60.0, 'two calls of the next episode')
    server.kill()
    episode = wait_for(lambda: len(read_jsonl(log)) > len(ros) and read_jsonl(log)[-1], 30.0, 'the episode to end')
    assert episode.episode_id == 'killed-server' and episode.end_reason == 'server_lost'
    assert not episode.success and episode.inference_calls >= 2
    assert 'inference failed (server_lost)' in node_log(tmp_path, 'policy_node')
    hold = wait_for(lambda: sent[-1] if len(sent[-1].points) == 1 else None, 10.0, 'the hold')
    assert list(hold.points[0].velocities) == [0.0] * len(JOINT_NAMES)
    for rules in shipped_rules():   # windows and holds: what each distro's real controller accepts
        refused = [(i, jtc.rejection(m, rules)) for i, m in enumerate(sent) if jtc.rejection(m, rules)]
        assert not refused, refused[:3]
    assert 'trajectory rejected' not in node_log(tmp_path, 'sim_node')


def plugin_spec(tmp_path, inference_timeout_s):
    return NodeSpec('policy_node', overrides={
        'policy.backend': 'plugin', 'policy.plugin': EXAMPLE, 'policy.plugin_args': '{latency_s: 600.0}',
        'execution.chunk_size': 8, 'execution.n_action_steps': 4, 'episode.log_path': str(tmp_path / 'ep.jsonl'),
        'episode.inference_timeout_s': inference_timeout_s, 'controller.parameter_timeout_s': 1.0})


@pytest.fixture
def hung_policy(tmp_path, harness, launch, request):
    """policy_node running the plug-in example whose every call sleeps 600 s, fed joint states."""
    run = launch([plugin_spec(tmp_path, request.param)])
    io = dict(run=run, stats=harness.record(EpisodeStats, 'policytrim/episode_stats'),
              sent=harness.record(JointTrajectory, 'arm_controller/joint_trajectory'),
              instruction=harness.publisher(String, 'instruction'),
              events=harness.publisher(EpisodeEvent, 'episode/event', LATCHED))
    harness.stream(JointState, 'joint_states', joint_state, qos=qos_profile_sensor_data)
    return io


def start_episode(tmp_path, io, n):
    io['instruction'].publish(String(data='wave'))
    wait_for(lambda: f'episode policy_node-{n:04d}' in node_log(tmp_path, 'policy_node'), what=f'episode {n}')
    time.sleep(0.5)   # joint states stream at 50 Hz: its inference call is in flight now


def assert_held(io, n_holds):
    holds = wait_for(lambda: len(io['sent']) >= n_holds and io['sent'], 10.0, f'{n_holds} holds')
    for hold in holds:   # no window was ever sent: every message is a hold at the measured positions
        assert len(hold.points) == 1 and list(hold.points[0].positions) == [0.0] * len(JOINT_NAMES)
        for distro in jtc.DISTROS:
            assert jtc.rejection(hold, jtc.ControllerRules.for_distro(distro, JOINT_NAMES)) is None


@pytest.mark.parametrize('hung_policy', [600.0], indirect=True)
def test_a_hung_model_never_blocks_events_the_next_episode_or_shutdown(tmp_path, hung_policy):
    io = hung_policy
    start_episode(tmp_path, io, 1)
    io['events'].publish(EpisodeEvent(event=EpisodeEvent.FAILURE))      # the environment ends it
    assert wait_for(lambda: io['stats'][:1], 10.0, 'EpisodeStats')[0].end_reason == 'failure'
    start_episode(tmp_path, io, 2)
    start_episode(tmp_path, io, 3)                                       # preempts episode 2
    assert wait_for(lambda: io['stats'][1:2], 10.0, 'EpisodeStats')[0].end_reason == 'preempted'
    codes = io['run'].stop()                                             # SIGINT while the call hangs
    assert codes['policy_node'] == 0
    # the log line is written before the node exits; its last EpisodeStats may not outlive the process
    assert [e.end_reason for e in read_jsonl(tmp_path / 'ep.jsonl')] == ['failure', 'preempted', 'stopped']
    assert_held(io, 3)
    assert all(e.inference_calls == 0 for e in read_jsonl(tmp_path / 'ep.jsonl'))


@pytest.mark.parametrize('hung_policy', [1.0], indirect=True)
def test_a_call_past_inference_timeout_ends_the_episode_and_holds(tmp_path, hung_policy):
    io = hung_policy
    io['instruction'].publish(String(data='wave'))
    assert wait_for(lambda: io['stats'][:1], 15.0, 'EpisodeStats')[0].end_reason == 'inference_timeout'
    assert 'has not returned from a call started' in node_log(tmp_path, 'policy_node')
    io['instruction'].publish(String(data='wave'))   # the call still hangs: the next episode cannot run
    assert wait_for(lambda: io['stats'][1:2], 15.0, 'EpisodeStats')[0].end_reason == 'inference_timeout'
    assert_held(io, 2)
    assert np.all([s.inference_calls == 0 for s in io['stats']])
