"""The scripted expert through sim_node + policy_node + episode_runner over DDS, against the
ROS-free loop on the same seeds: both must succeed and count the same steps and inference calls.

The conformance check: every JointTrajectory the nodes send (windows and holds) is captured and
checked against the real joint_trajectory_controller's rules of Humble, Jazzy and Kilted, in the
configuration README tells users to use (config/controllers.yaml) and, when the controller keeps a
distro's default, with the windows policy_node adapts to it; the strict simulated controller
rejects nothing.
"""
import json
import math
import subprocess

import pytest
import yaml
from rclpy.qos import QoSProfile
from trajectory_msgs.msg import JointTrajectory

from policytrim_ros import launcher
from policytrim_ros.envs.arm import ArmEnv
from policytrim_ros.execution import jtc
from policytrim_ros.execution.config import ExecutionConfig
from policytrim_ros.execution.episode import run_episode
from policytrim_ros.execution.metrics import read_jsonl
from policytrim_ros.launcher import NodeSpec
from policytrim_ros.nodes.sim_controller import FollowJointTrajectory
from policytrim_ros.policy.arm_expert import ScriptedExpertPolicy

from harness import node_log, wait_for

TASKS = ['reach', 'push', 'pick_place']
H, SEED, EPISODES = 16, 1000, 2
SHIPPED = yaml.safe_load((launcher.package_share() / 'config' / 'controllers.yaml').read_text())
SHIPPED_RULES = {k: v for k, v in SHIPPED['arm_controller']['ros__parameters'].items() if k in jtc.PARAMETERS}
NO_ACTION = pytest.mark.skipif(FollowJointTrajectory is None, reason='control_msgs is not installed (bash '
                               '../shared/ros2-extras/install.sh .venv builds it)')


@pytest.mark.parametrize('h, sim_controller, interface, window_end', [
    (4, 'shipped', 'topic', 'moving'),          # config/sim.yaml: Kilted rules + config/controllers.yaml
    (16, 'jazzy-default', 'topic', 'rest'),     # a default Jazzy controller: windows end at rest
    pytest.param(4, 'shipped', 'action', 'moving', marks=NO_ACTION),
], ids=['h4-shipped-topic', 'h16-jazzy-default-topic', 'h4-shipped-action'])
def test_expert_closed_loop_over_ros_matches_the_core_loop(tmp_path, harness, launch, h, sim_controller,
                                                            interface, window_end):
    params = launcher.package_share() / 'config' / 'sim.yaml'
    log = tmp_path / 'episodes.jsonl'
    sent = harness.record(JointTrajectory, 'arm_controller/joint_trajectory', QoSProfile(depth=1000))
    sim = {} if sim_controller == 'shipped' else {'controller.distro': 'jazzy', 'controller.params_file': ''}
    launch([NodeSpec('sim_node', [params], sim),
            NodeSpec('policy_node', [params], {'execution.n_action_steps': h, 'execution.chunk_size': H,
                                               'policy.backend': 'expert', 'episode.log_path': str(log),
                                               'controller.interface': interface})])
    if interface == 'topic':
        wait_for(lambda: harness.node.count_publishers('arm_controller/joint_trajectory'), 30.0,
                 'policy_node to be discovered by the recorder')
    runner = NodeSpec('episode_runner', [params], {
        'runner.tasks': TASKS, 'runner.episodes_per_task': EPISODES, 'runner.seed': SEED,
        'runner.summary_path': str(tmp_path / 'summary.json'), 'runner.episode_timeout_s': 60.0})
    done = subprocess.run(runner.command(), env=launcher.ros_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'inference calls' in done.stdout  # the per-episode table was printed
    assert f'windows end {window_end}' in node_log(tmp_path, 'policy_node')

    ros = read_jsonl(log)
    assert [e.episode_id for e in ros] == [f'{t}-{k:03d}' for t in TASKS for k in range(EPISODES)]
    for e in ros:
        assert e.success and e.end_reason == 'success', e
        assert e.inference_calls == math.ceil(e.steps / h), e
        assert (e.n_action_steps, e.chunk_size, e.chunk_utilization) == (h, H, h / H)
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['all']['success_rate'] == 1.0

    env = ArmEnv()
    config = ExecutionConfig(chunk_size=H, n_action_steps=h, control_dt=0.1, max_episode_steps=150)
    policy = ScriptedExpertPolicy(H, 0.1)
    core = [run_episode(env, policy, config, t, SEED + k, window_end=window_end)[0]
            for t in TASKS for k in range(EPISODES)]
    assert [(c.success, c.steps, c.inference_calls) for c in core] == \
        [(r.success, r.steps, r.inference_calls) for r in ros]

    # conformance: what the nodes sent is what every distro's real controller accepts
    assert 'trajectory rejected' not in node_log(tmp_path, 'sim_node')
    if interface == 'topic':
        windows = [m for m in sent if len(m.points) > 1]
        holds = [m for m in sent if len(m.points) == 1]
        assert len(windows) == sum(e.inference_calls for e in ros) and len(holds) >= len(ros)
        settings = SHIPPED_RULES if sim_controller == 'shipped' else {}
        for distro in jtc.DISTROS:
            rules = jtc.ControllerRules.for_distro(distro, env.joint_names, **settings)
            refused = [(i, jtc.rejection(m, rules)) for i, m in enumerate(sent) if jtc.rejection(m, rules)]
            assert not refused, (distro, refused[:3])
