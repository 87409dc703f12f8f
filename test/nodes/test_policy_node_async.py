"""Async inference over DDS: sim_node in real time + policy_node with a deliberately slow policy (the
scripted expert behind a 0.3 s DelayedPolicy). The arm keeps moving through every inference call:
each next window reaches the controller before the running one ends and takes over without a jump,
the episode counts steps and calls as the synchronous loop does, and every message passes the
joint_trajectory_controller rules of Humble, Jazzy and Kilted."""
import json
import math
import subprocess

import yaml
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock
from trajectory_msgs.msg import JointTrajectory

from policytrim_ros import launcher
from policytrim_ros.evaluation.seams import seam_jumps
from policytrim_ros.execution import jtc
from policytrim_ros.execution.metrics import read_jsonl
from policytrim_ros.launcher import NodeSpec
from policytrim_ros.nodes import conversions as conv
from policytrim_ros.robots.arm import JOINT_NAMES

from harness import node_log, wait_for

H, h, LATENCY = 32, 8, 0.3
SHIPPED = yaml.safe_load((launcher.package_share() / 'config' / 'controllers.yaml').read_text())
SHIPPED_RULES = {k: v for k, v in SHIPPED['arm_controller']['ros__parameters'].items() if k in jtc.PARAMETERS}


def test_async_inference_keeps_the_arm_moving_through_slow_calls(tmp_path, harness, launch):
    params = launcher.package_share() / 'config' / 'sim.yaml'
    log = tmp_path / 'episodes.jsonl'
    clock, sent = [0.0], []
    harness.node.create_subscription(Clock, '/clock', lambda m: clock.__setitem__(0, conv.to_seconds(m.clock)), 10)
    harness.node.create_subscription(JointTrajectory, 'arm_controller/joint_trajectory',
                                     lambda m: sent.append((clock[0], m)), QoSProfile(depth=1000))
    launch([NodeSpec('sim_node', [params], {'sim.step_mode': 'realtime', 'sim.real_time_factor': 1.0}),
            NodeSpec('policy_node', [params], {
                'policy.backend': 'plugin', 'policy.plugin': 'policytrim_ros.policy.examples.delayed:DelayedPolicy',
                'policy.plugin_args': json.dumps({'backend': 'expert', 'latency_s': LATENCY}),
                'execution.chunk_size': H, 'execution.n_action_steps': h, 'execution.async_inference': True,
                'episode.log_path': str(log)})])
    wait_for(lambda: harness.node.count_publishers('arm_controller/joint_trajectory'), 60.0, 'policy_node')
    runner = NodeSpec('episode_runner', [params], {'runner.tasks': ['push'], 'runner.episodes_per_task': 1,
                                                   'runner.seed': 1000, 'runner.episode_timeout_s': 60.0})
    done = subprocess.run(runner.command(), env=launcher.ros_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    wait_for(lambda: any(len(m.points) == 1 for _, m in sent), 10.0, 'the hold at the episode end')

    [episode] = read_jsonl(log)
    assert episode.success, episode
    assert episode.inference_calls == math.ceil(episode.steps / h)
    windows = [(t, conv.msg_to_trajectory(m)) for t, m in sent if len(m.points) > 1]
    assert len(windows) >= episode.inference_calls >= 4
    # every next window arrived while the one before still ran (the arm never waited for a call) ...
    for (_, before), (arrival, _) in zip(windows[:-1], windows[1:]):
        assert arrival < before.start_time + before.duration - 1e-6, (arrival, before.start_time)
    # ... and took over without a jump of the commanded state (a sync window 0.3 s late jumps ~0.1 rad)
    jumps = seam_jumps(windows)
    assert jumps.position < 0.01 and jumps.velocity < 0.3, jumps
    assert 'stale_chunk' not in node_log(tmp_path, 'policy_node')
    assert 'trajectory rejected' not in node_log(tmp_path, 'sim_node')
    for distro in jtc.DISTROS:   # the shipped controller settings (config/controllers.yaml)
        rules = jtc.ControllerRules.for_distro(distro, JOINT_NAMES, **SHIPPED_RULES)
        refused = [(i, jtc.rejection(m, rules, now=t)) for i, (t, m) in enumerate(sent) if jtc.rejection(m, rules, now=t)]
        assert not refused, (distro, refused[:3])
