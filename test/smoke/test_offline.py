"""Offline fine-tuning end to end with a tiny budget: policy bags -> train-offline -> checkpoint,
through the CLI, resumed exactly, and recorded episodes that replay the core loop's."""
import json
from pathlib import Path

import numpy as np
import pytest

from policytrim_ros.cli import main
from policytrim_ros.data.bag import write_episode_bag
from policytrim_ros.data.episode import Episode
from policytrim_ros.data.executed import read_policy_bag
from policytrim_ros.data.rollouts import RecordingEnv, record_episode
from policytrim_ros.envs.arm import ArmEnv
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.execution.config import ExecutionConfig, SafetyConfig
from policytrim_ros.execution.episode import run_episode
from policytrim_ros.policy.checkpoint import load_checkpoint, load_tensors
from policytrim_ros.policy.torch_policy import TorchVLAPolicy
from policytrim_ros.robots.arm import JOINT_NAMES

REPO = Path(__file__).resolve().parents[2]


def policy_episode(task, seed, steps, h, success):
    rng = np.random.default_rng(seed)
    positions = rng.normal(scale=0.1, size=(steps, 7))
    return Episode(task=task, instruction=f'do {task}', seed=seed, style='policy', success=success, control_dt=0.05,
                   joint_names=JOINT_NAMES, images=rng.integers(0, 256, (steps, 96, 96, 3), dtype=np.uint8),
                   joint_positions=positions, actions=positions + 0.01, times=np.arange(steps) * 0.05,
                   call_index=np.arange(steps) // h, cameras=('scene_camera',))


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp('bags')
    for task, seed, steps, success in (('reach', 0, 12, True), ('reach', 1, 20, True), ('push', 2, 16, False)):
        write_episode_bag(policy_episode(task, seed, steps, 4, success), root / task / f'policy-{seed}')
    return root


def train(bags, checkpoint, out, steps, *extra):
    argv = ['train-offline', '--bags', str(bags), '--set', f'init_from={checkpoint}', f'out_dir={out}',
            f'steps={steps}', 'batch_size=4', 'warmup_steps=1', 'log_every=1', 'checkpoint_every=2', *extra]
    assert main(argv) == 0


def test_offline_fine_tune_writes_a_resumable_checkpoint_and_the_scores(bags, make_tiny_checkpoint, tmp_path):
    init = make_tiny_checkpoint(16)
    train(bags, init, tmp_path / 'full', 4)
    scores = json.loads((tmp_path / 'full' / 'episodes.json').read_text())
    rows = {(r['task'], r['seed']): r for r in scores['episodes']}
    assert rows[('reach', 0)]['weight'] > rows[('reach', 1)]['weight']   # the faster success weighs more
    assert rows[('push', 2)]['reward'] == 0.0 and rows[('push', 2)]['weight'] == 0.0   # push: no success at all
    assert {r['windows_from'] for r in rows.values()} == {'commands'}
    assert rows[('reach', 1)]['n_action_steps'] == 4.0 and rows[('reach', 1)]['chunk_size'] == 16
    model, config, meta = load_checkpoint(tmp_path / 'full' / 'last')
    assert config.chunk_size == 16 and meta['step'] == 4 and meta['offline_config']['rewards']['reward'] == 'steps'
    before = load_tensors(init / 'model.safetensors')
    after = load_tensors(tmp_path / 'full' / 'last' / 'model.safetensors')
    assert any(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)   # it trained
    # a run stopped after step 2 and resumed ends with exactly the weights of the uninterrupted one
    train(bags, init, tmp_path / 'split', 2)
    train(bags, init, tmp_path / 'split', 4, '--resume')
    split = load_tensors(tmp_path / 'split' / 'last' / 'model.safetensors')
    for key in after:
        assert np.array_equal(after[key].numpy(), split[key].numpy()), key
    assert main(['train-offline', '--bags', str(bags), '--set', f'init_from={init}', f'out_dir={tmp_path / "x"}',
                 'rewards.weighting=filtred']) == 2


def test_filtered_training_without_a_success_stops_with_a_message(bags, make_tiny_checkpoint, tmp_path, capsys):
    argv = ['train-offline', '--bags', str(bags / 'push'), '--set', f'init_from={make_tiny_checkpoint(16)}',
            f'out_dir={tmp_path / "run"}', 'steps=1', 'rewards.weighting=filtered']
    assert main(argv) == 2
    assert 'weight 0: nothing to train on' in capsys.readouterr().err


def test_a_recorded_episode_is_the_core_loops_episode(make_tiny_checkpoint, tmp_path):
    policy = TorchVLAPolicy(make_tiny_checkpoint(16))
    execution = ExecutionConfig(chunk_size=16, n_action_steps=4, max_episode_steps=10)
    env = ArmEnv(EnvConfig(cameras=('scene_camera', 'wrist_camera')))   # the policy sees the first
    episode, row = record_episode(RecordingEnv(env), policy, execution, SafetyConfig(), 'reach', 1000)
    plain, _ = run_episode(env, policy, execution, 'reach', 1000, safety=SafetyConfig())
    assert (row['steps'], row['inference_calls'], row['success']) == (plain.steps, plain.inference_calls, False)
    assert episode.images.shape == (10, 96, 192, 3) and episode.cameras == ('scene_camera', 'wrist_camera')
    np.testing.assert_array_equal(episode.call_index, np.arange(10) // 4)
    recorded = read_policy_bag(write_episode_bag(episode, tmp_path / 'bag'))
    assert [(w.first_step, w.steps, w.n_action_steps) for w in recorded.windows] == [(0, 4, 4), (4, 4, 4), (8, 2, 2)]
    np.testing.assert_allclose(recorded.episode.actions, episode.actions)


def test_record_policy_cli_writes_every_episode_and_an_index(make_tiny_checkpoint, tmp_path):
    argv = ['record-policy', '--checkpoint', str(make_tiny_checkpoint(16)), '--n-action-steps', '8', '--tasks', 'reach',
            '--episodes', '1', '--seed', '3', '--out', str(tmp_path / 'rec'), '--params', str(REPO / 'config' / 'sim.yaml')]
    assert main(argv) == 0
    index = json.loads((tmp_path / 'rec' / 'index.json').read_text())
    (row,) = index['episodes']
    assert (index['n_action_steps'], index['chunk_size'], row['path'], row['success']) == (8, 16, 'reach/policy-3', False)
    recorded = read_policy_bag(tmp_path / 'rec' / 'reach' / 'policy-3')   # a failed episode is kept
    assert recorded.episode.steps == row['steps'] and len(recorded.windows) == row['inference_calls']
    assert {w.n_action_steps for w in recorded.windows[:-1]} == {8}
