"""The demo -> BC -> eval pipeline on Meta-World with tiny budgets: collect -> bags -> ChunkDataset ->
train-bc (with its closed-loop evaluation) -> eval of the expert and of the checkpoint."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from policytrim_ros import launcher
from policytrim_ros.data.bag import bag_custom_data, read_episode_bag
from policytrim_ros.data.collect import collect_demonstrations
from policytrim_ros.data.dataset import ChunkDataset
from policytrim_ros.envs.metaworld import MetaWorldEnv
from policytrim_ros.evaluation.sweep import SweepConfig, run_sweep_end_states
from policytrim_ros.policy.torch_policy import TorchVLAPolicy
from policytrim_ros.robots.metaworld import ACTION_NAMES, CONTROL_DT, METAWORLD_TASKS
from policytrim_ros.robots.metaworld_tasks import CORE_TASKS
from policytrim_ros.training.bc import train_bc
from policytrim_ros.training.bc_config import BCConfig
from policytrim_ros.training.grpo import GRPOConfig
from policytrim_ros.training.trainer import PolicyTrimConfig, train_policytrim

CLI = [str(Path(sys.executable).parent / 'policytrim')]
TASKS = CORE_TASKS  # the shipped checkpoints' tasks: reach-v3, push-v3, pick-place-v3


@pytest.fixture(scope='module')
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp('metaworld-demos')
    paths = collect_demonstrations(TASKS, 1, 'teleop', 0, root, workers=1, progress=False)
    return root, paths


def run(*args):
    return subprocess.run(CLI + list(args), env=launcher.ros_env(), capture_output=True, text=True, timeout=300)


def test_collected_bags_read_back_with_meta_world_joints(demos):
    root, paths = demos
    assert paths == [root / task / 'teleop-0' for task in sorted(TASKS)]
    for path in paths:
        episode = read_episode_bag(path)
        assert episode.success and episode.joint_names == ACTION_NAMES and episode.control_dt == CONTROL_DT
        assert episode.instruction == METAWORLD_TASKS[episode.task].instruction
        assert np.abs(episode.actions).max() <= 1.0 and bag_custom_data(path)['style'] == 'teleop'
    data = ChunkDataset(root, chunk_size=16)
    assert data.joint_names == ACTION_NAMES and len(data) == sum(e.steps for e in data.episodes)
    window = data[0]
    assert window['image'].shape == (96, 96, 3) and window['state'].shape == (4,)
    assert window['actions'].shape == (16, 4)
    stats = data.statistics(action_offsets=False)
    assert stats.pop('step_delta_std').shape == (16, 4)
    assert all(v.shape == (4,) and np.isfinite(v).all() for v in stats.values())


def test_sweep_runs_the_meta_world_expert_backend():
    config = SweepConfig(tasks=('reach-v3',), n_action_steps=(16,), episodes=1, control_dt=CONTROL_DT, workers=1)
    [(metrics, end_state)] = run_sweep_end_states(config, progress=False)[16]
    assert metrics.success and metrics.task == 'reach-v3' and 1 <= metrics.inference_calls < metrics.steps
    assert end_state['obj_to_target'] <= 0.05 and 'failure_mode' not in end_state


def test_bc_trains_and_evaluates_on_meta_world_demos_then_eval_runs_the_checkpoint(demos, tmp_path):
    root, _ = demos
    final = train_bc(BCConfig(demos=str(root), steps=2, batch_size=4, warmup_steps=1, log_every=1,
                              checkpoint_every=2, eval_every=0, eval_episodes=1, eval_n_action_steps=16,
                              out_dir=str(tmp_path / 'run')), progress=False)
    scalars = (tmp_path / 'run' / 'scalars.csv').read_text()
    assert all(f'eval/{task}/success_rate' in scalars for task in TASKS)
    policy = TorchVLAPolicy(final)
    assert policy.metadata.joint_names == ACTION_NAMES and policy.metadata.image_size == (96, 96)
    env = MetaWorldEnv('push-v3')
    try:
        chunk = policy.predict_action_chunk(env.reset('push-v3', 1000))
    finally:
        env.close()
    assert chunk.shape == (16, 4) and np.isfinite(chunk).all()
    result = run('eval', '--tasks', 'reach-v3', '--backend', 'torch', '--checkpoint', str(final), '--episodes', '1',
                 '--n-action-steps', '16', '--reference', '16', '--workers', '1', '--out', str(tmp_path / 'eval'))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    [row] = [r for r in json.loads((tmp_path / 'eval' / 'sweep.json').read_text())['rows'] if r['task'] == 'reach-v3']
    assert row['n_action_steps'] == 16 and row['chunk_size'] == 16


def test_eval_and_collect_run_any_of_the_50_tasks_by_name_and_a_typo_names_the_closest(tmp_path):
    result = run('eval', '--tasks', 'door-open-v3', 'disassemble-v3', '--episodes', '1', '--seed', '1003',
                 '--n-action-steps', '16', '--reference', '16', '--workers', '1', '--out', str(tmp_path / 'eval'))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = {r['task']: r for r in json.loads((tmp_path / 'eval' / 'sweep.json').read_text())['rows']}
    assert rows['door-open-v3']['success_rate'] == rows['disassemble-v3']['success_rate'] == 1.0
    assert rows['disassemble-v3']['steps'] > 150   # its own step limit (350), not config/sim.yaml's 150
    result = run('collect', '--tasks', 'door-open-v3', '--episodes', '1', '--style', 'efficient', '--workers', '1',
                 '--out', str(tmp_path / 'demos'))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    episode = read_episode_bag(tmp_path / 'demos' / 'door-open-v3' / 'efficient-0')
    assert episode.success and episode.instruction == METAWORLD_TASKS['door-open-v3'].instruction
    typo = run('eval', '--tasks', 'door-opne-v3', '--out', str(tmp_path / 'typo'))
    assert typo.returncode == 2 and "unknown task 'door-opne-v3' (did you mean 'door-open-v3'?)" in typo.stderr
    assert "closest Meta-World tasks: 'door-open-v3'" in typo.stderr


def test_eval_through_ros_refuses_meta_world_tasks(tmp_path):
    result = run('eval', '--tasks', 'reach-v3', '--ros', '--out', str(tmp_path))
    assert result.returncode == 2 and '--ros runs the embedded arm' in result.stderr


def test_policytrim_stage1_iteration_runs_on_meta_world(demos, tmp_path):
    root, _ = demos
    baseline = train_bc(BCConfig(demos=str(root), steps=1, batch_size=4, warmup_steps=1, log_every=1,
                                 checkpoint_every=1, eval_every=0, eval_episodes=0, out_dir=str(tmp_path / 'bc')),
                        progress=False)
    config = PolicyTrimConfig(init=str(baseline), tasks=('reach-v3',), iterations=1, groups_per_iteration=1,
                              group_size=3, max_episode_steps=20, workers=0, checkpoint_every=1,
                              grpo=GRPOConfig(minibatch_size=8), out_dir=str(tmp_path / 's1'))
    final = train_policytrim(config, progress=False)
    with (tmp_path / 's1' / 'scalars.csv').open() as f:
        logged = {row['metric']: float(row['value']) for row in csv.DictReader(f)}
    assert logged['n_action_steps'] == 10.0      # Gamma's h = 4, 10, 16, one member each
    assert TorchVLAPolicy(final).metadata.joint_names == ACTION_NAMES


def test_policytrim_refuses_an_arm_checkpoint_on_meta_world_tasks(tmp_path):
    config = PolicyTrimConfig(tasks=('reach-v3',), iterations=1, workers=0, out_dir=str(tmp_path / 'run'))
    with pytest.raises(ValueError, match='commands'):
        train_policytrim(config, progress=False)


def test_the_shipped_meta_world_baseline_runs_on_meta_world_observations():
    from policytrim_ros import resources
    policy = TorchVLAPolicy(resources.resolve('package://policytrim_ros/models/bc-metaworld'))
    assert policy.metadata.joint_names == ACTION_NAMES and policy.metadata.chunk_size == 16
    env = MetaWorldEnv('pick-place-v3')
    try:
        chunk = policy.predict_action_chunk(env.reset('pick-place-v3', 1000))
    finally:
        env.close()
    assert chunk.shape == (16, 4) and np.isfinite(chunk).all() and np.abs(chunk).max() <= 1.0 + 1e-6
