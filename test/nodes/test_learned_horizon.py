"""A learned-h episode over DDS: sim_node + policy_node (a checkpoint with an efficiency head,
``execution.horizon: learned``) + episode_runner. Every ChunkStats carries its call's h, and the
calls are those of the ROS-free loop on the same seed: the same h per call, window by window
(test/unit/test_horizon.py has episodes whose h changes from call to call)."""
import subprocess

import yaml
from rclpy.qos import QoSProfile
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
from policytrim_ros.msg import ChunkStats
from policytrim_ros.policy.torch_policy import TorchVLAPolicy

from harness import wait_for

H, SEED, MAX_STEPS = 16, 1000, 40


def test_a_learned_h_episode_sends_each_call_for_the_h_its_head_picked(tmp_path, harness, launch,
                                                                     tiny_horizon_checkpoint):
    params = launcher.package_share() / 'config' / 'sim.yaml'
    log = tmp_path / 'episodes.jsonl'
    calls = harness.record(ChunkStats, 'policytrim/chunk_stats', QoSProfile(depth=100))
    sent = harness.record(JointTrajectory, 'arm_controller/joint_trajectory', QoSProfile(depth=100))
    launch([NodeSpec('sim_node', [params], {}),
            NodeSpec('policy_node', [params], {
                'policy.backend': 'torch', 'policy.checkpoint': str(tiny_horizon_checkpoint),
                'execution.chunk_size': H, 'execution.n_action_steps': H, 'execution.horizon': 'learned',
                'execution.max_episode_steps': MAX_STEPS, 'episode.log_path': str(log)})])
    wait_for(lambda: harness.node.count_publishers('policytrim/chunk_stats'), 60.0, 'policy_node to start')
    runner = NodeSpec('episode_runner', [params], {
        'runner.tasks': ['reach'], 'runner.episodes_per_task': 1, 'runner.seed': SEED,
        'runner.summary_path': str(tmp_path / 'summary.json'), 'runner.episode_timeout_s': 60.0})
    done = subprocess.run(runner.command(), env=launcher.ros_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr[-2000:]     # the random fixture fails its task: rc 1
    (episode,) = read_jsonl(log)
    assert episode.end_reason == 'max_steps' and episode.steps == MAX_STEPS
    stats = wait_for(lambda: len(calls) >= episode.inference_calls and calls, what='every ChunkStats')
    ros = [(c.call_index, c.n_action_steps, c.first_step, c.last_step) for c in stats]

    env = ArmEnv(from_dict(EnvConfig, ros_parameters(load_yaml(params), 'sim_node')['env']))
    config = ExecutionConfig(H, H, 0.1, MAX_STEPS, horizon='learned')
    core, records = run_episode(env, TorchVLAPolicy(tiny_horizon_checkpoint), config, 'reach', SEED,
                                window_end='moving')
    assert ros == [(r.call_index, r.n_action_steps, r.first_step, r.last_step) for r in records]
    assert (episode.inference_calls, episode.chunk_utilization) == (core.inference_calls, core.chunk_utilization)
    assert all(c.n_action_steps in (2, 4, 8) for c in stats[:-1])   # the head's, not n_action_steps (16)
    assert sum(c.n_action_steps for c in stats) == MAX_STEPS       # the last window ends at the step limit

    # every window of varying length (and the final hold) is what each distro's real JTC accepts,
    # with the shipped controllers.yaml (config/sim.yaml's controller)
    shipped = yaml.safe_load((launcher.package_share() / 'config' / 'controllers.yaml').read_text())
    settings = {k: v for k, v in shipped['arm_controller']['ros__parameters'].items() if k in jtc.PARAMETERS}
    windows = wait_for(lambda: len(sent) > len(stats) and sent, what='the windows and the hold')
    assert sorted({len(m.points) for m in windows[:len(stats)]}) == sorted({c.n_action_steps for c in stats})
    for distro in jtc.DISTROS:
        rules = jtc.ControllerRules.for_distro(distro, env.joint_names, **settings)
        assert not [jtc.rejection(m, rules) for m in windows if jtc.rejection(m, rules)], distro
