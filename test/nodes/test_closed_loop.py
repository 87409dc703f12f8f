"""The scripted expert through sim_node + policy_node + episode_runner over DDS, against the
ROS-free loop on the same seeds: both must succeed and count the same steps and inference calls."""
import json
import math
import subprocess

import pytest

from policytrim_ros import launcher
from policytrim_ros.envs.arm import ArmEnv
from policytrim_ros.execution.config import ExecutionConfig
from policytrim_ros.execution.episode import run_episode
from policytrim_ros.execution.metrics import read_jsonl
from policytrim_ros.launcher import NodeSpec
from policytrim_ros.policy.expert import ScriptedExpertPolicy

TASKS = ['reach', 'push', 'pick_place']
H, SEED, EPISODES = 16, 1000, 2


@pytest.mark.parametrize('h', [4, 16])
def test_expert_closed_loop_over_ros_matches_the_core_loop(tmp_path, launch, h):
    params = launcher.package_share() / 'config' / 'sim.yaml'
    log = tmp_path / 'episodes.jsonl'
    launch([NodeSpec('sim_node', [params]),
            NodeSpec('policy_node', [params], {'execution.n_action_steps': h, 'execution.chunk_size': H,
                                               'policy.backend': 'expert', 'episode.log_path': str(log)})])
    runner = NodeSpec('episode_runner', [params], {
        'runner.tasks': TASKS, 'runner.episodes_per_task': EPISODES, 'runner.seed': SEED,
        'runner.summary_path': str(tmp_path / 'summary.json'), 'runner.episode_timeout_s': 60.0})
    done = subprocess.run(runner.command(), env=launcher.ros_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'inference calls' in done.stdout  # the per-episode table was printed

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
    core = [run_episode(env, policy, config, t, SEED + k)[0] for t in TASKS for k in range(EPISODES)]
    assert [(c.success, c.steps, c.inference_calls) for c in core] == \
        [(r.success, r.steps, r.inference_calls) for r in ros]
