"""Behaviour cloning end to end with a tiny budget: collect -> train-bc -> checkpoint -> policy,
a resumed run ends with exactly the weights of an uninterrupted one, and takeover demonstrations
start where the trained policy handed over."""
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from policytrim_ros.config import ConfigError, from_dict
from policytrim_ros.data.bag import BagError, read_episode_bag
from policytrim_ros.data.collect import Takeover, collect_demonstrations, collect_episode
from policytrim_ros.data.dataset import BagWarning
from policytrim_ros.envs.arm import ArmEnv
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.operators import EfficientOperator
from policytrim_ros.execution.config import ExecutionConfig, SafetyConfig
from policytrim_ros.execution.episode import run_episode
from policytrim_ros.policy.base import PolicyInputError
from policytrim_ros.policy.checkpoint import load_tensors
from policytrim_ros.policy.factory import PolicyConfig
from policytrim_ros.policy.torch_policy import TorchVLAPolicy
from policytrim_ros.robots.arm import JOINT_NAMES
from policytrim_ros.training.bc import Batches, WeightAverage, chunk_loss, step_weights, train_bc
from policytrim_ros.training.bc_config import BCConfig


@pytest.fixture(scope='module')
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp('demos')
    collect_demonstrations(['reach'], 1, 'teleop', 0, root, workers=1, progress=False)
    return root


def config(demos, out, steps):
    return BCConfig(demos=str(demos), steps=steps, batch_size=4, warmup_steps=2, log_every=1,
                    checkpoint_every=2, eval_every=0, eval_episodes=0, out_dir=str(out), num_threads=1)


def test_bc_trains_a_checkpoint_the_torch_backend_can_run(demos, tmp_path):
    final = train_bc(config(demos, tmp_path / 'run', 2), progress=False)
    lines = (tmp_path / 'run' / 'scalars.csv').read_text().splitlines()
    assert lines[0] == 'step,metric,value,wall_clock_s' and any(',loss,' in line for line in lines)
    policy = TorchVLAPolicy(final)
    assert policy.metadata.joint_names == JOINT_NAMES and policy.metadata.chunk_size == 16
    assert policy.metadata.cameras == ('scene_camera',)   # the camera the demonstrations were taken with
    observation = ArmEnv().reset('reach', 1000)
    chunk = policy.predict_action_chunk(observation)
    assert chunk.shape == (16, 7) and np.isfinite(chunk).all()
    with pytest.raises(FileExistsError, match='resume'):
        train_bc(config(demos, tmp_path / 'run', 2), progress=False)


def test_bc_on_two_camera_demos_trains_a_policy_of_tiled_images(tmp_path):
    two = EnvConfig(cameras=('scene_camera', 'wrist_camera'), image_width=48, image_height=48)
    collect_demonstrations(['reach'], 1, 'teleop', 0, tmp_path / 'demos', workers=1, progress=False,
                           env_config=two)
    run = replace(config(tmp_path / 'demos', tmp_path / 'run', 2), eval_every=2, eval_episodes=1)
    policy = TorchVLAPolicy(train_bc(run, progress=False))
    assert ',eval/reach/success_rate,' in (tmp_path / 'run' / 'scalars.csv').read_text()  # evaluated with both
    assert policy.metadata.cameras == ('scene_camera', 'wrist_camera')
    assert (policy.metadata.image_size, policy.metadata.camera_image_size) == ((48, 96), (48, 48))
    env = ArmEnv(two)
    assert policy.predict_action_chunk(env.reset('reach', 1000)).shape == (16, 7)
    scene_only = ArmEnv(replace(two, cameras=('scene_camera',)))
    with pytest.raises(PolicyInputError, match=r"2 cameras \['scene_camera', 'wrist_camera'\] of 48x48, tiled"):
        policy.predict_action_chunk(scene_only.reset('reach', 1000))
    with pytest.raises(ConfigError, match=r"trained on the cameras \['scene_camera', 'wrist_camera'\]: cameras "
                                          r"\['wrist_camera'\] are not among the rendered cameras \['scene_camera'\]"):
        run_episode(scene_only, policy, ExecutionConfig(), 'reach', 1000)
    # an env with more cameras: the policy sees its own, in its order (pixel noise is per camera
    # index, so the order is kept here)
    three = ArmEnv(replace(two, cameras=('scene_camera', 'wrist_camera', 'workspace_camera')))
    seen = []
    predict = policy.predict_action_chunk
    policy.predict_action_chunk = lambda observation: seen.append(observation.image) or predict(observation)
    short = ExecutionConfig(max_episode_steps=4)
    assert run_episode(three, policy, short, 'reach', 1000)[0].inference_calls == 1
    assert run_episode(env, policy, short, 'reach', 1000)[0].inference_calls == 1
    np.testing.assert_array_equal(seen[0], seen[1])
    # one camera of the demos: BC trains on that tile alone
    wrist = replace(config(tmp_path / 'demos', tmp_path / 'wrist', 1), cameras=('wrist_camera',))
    metadata = TorchVLAPolicy(train_bc(wrist, progress=False)).metadata
    assert (metadata.cameras, metadata.image_size) == (('wrist_camera',), (48, 48))


def test_bc_continues_from_a_checkpoint_with_init_from(demos, tmp_path):
    first = train_bc(config(demos, tmp_path / 'first', 2), progress=False)
    second = train_bc(replace(config(demos, tmp_path / 'second', 2), init_from=str(first), model='vla-10m'),
                      progress=False)
    before, after = (load_tensors(d / 'model.safetensors') for d in (first, second))
    assert before.keys() == after.keys()                 # the architecture of init_from, not the preset
    assert any(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)   # and trained on
    assert TorchVLAPolicy(second).metadata.cameras == ('scene_camera',)


def test_init_from_a_shorter_chunk_extends_it(demos, tmp_path):
    first = train_bc(replace(config(demos, tmp_path / 'first', 2), chunk_size=8), progress=False)
    longer = train_bc(replace(config(demos, tmp_path / 'longer', 2), init_from=str(first), chunk_size=12),
                      progress=False)
    policy = TorchVLAPolicy(longer)
    assert policy.metadata.chunk_size == 12 and policy.metadata.cameras == ('scene_camera',)
    assert policy.predict_action_chunk(ArmEnv().reset('reach', 1000)).shape == (12, 7)
    assert load_tensors(longer / 'model.safetensors')['action_queries'].shape[0] == 12
    with pytest.raises(ValueError, match='H <= 4'):
        train_bc(replace(config(demos, tmp_path / 'shorter', 2), init_from=str(first), chunk_size=4),
                 progress=False)


def test_resumed_bc_run_matches_an_uninterrupted_one(demos, tmp_path):
    train_bc(config(demos, tmp_path / 'full', 4), progress=False)
    train_bc(config(demos, tmp_path / 'split', 2), progress=False)       # "crashes" after step 2
    train_bc(replace(config(demos, tmp_path / 'split', 4)), resume=True, progress=False)
    full = load_tensors(tmp_path / 'full' / 'last' / 'model.safetensors')
    split = load_tensors(tmp_path / 'split' / 'last' / 'model.safetensors')
    assert full.keys() == split.keys()
    for key in full:
        assert np.array_equal(full[key].numpy(), split[key].numpy()), key


def test_a_weight_average_folds_each_step_in_with_a_ramped_decay():
    model = torch.nn.Linear(1, 1, bias=False)
    model.register_buffer('scale', torch.zeros(1))
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, decay=0.9)
    expected = 0.0
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0]):
        with torch.no_grad():
            model.weight.fill_(value)
            model.scale.fill_(value)
        average.update(model, step)
        decay = min(0.9, (1 + step) / (10 + step))   # 0.1, 0.18, ... then 0.9 from step 80 on
        expected = decay * expected + (1 - decay) * value
        assert average.model.weight.item() == pytest.approx(expected)
        assert average.model.scale.item() == value        # buffers (the normalization) are copied
    assert not average.model.weight.requires_grad and model.weight.requires_grad


def test_bc_with_a_weight_average_saves_it_and_the_raw_weights_and_resumes_both(demos, tmp_path):
    ema = lambda out, steps: replace(config(demos, out, steps), ema_decay=0.5)   # noqa: E731
    train_bc(ema(tmp_path / 'full', 4), progress=False)
    train_bc(ema(tmp_path / 'split', 2), progress=False)                 # "crashes" after step 2
    train_bc(ema(tmp_path / 'split', 4), resume=True, progress=False)
    for folder in ('last', 'raw', 'checkpoints/step_000004'):
        full, split = (load_tensors(tmp_path / run / folder / 'model.safetensors') for run in ('full', 'split'))
        for key in full:
            assert np.array_equal(full[key].numpy(), split[key].numpy()), (folder, key)
    average, raw = (load_tensors(tmp_path / 'full' / d / 'model.safetensors') for d in ('last', 'raw'))
    assert any(not np.array_equal(average[k].numpy(), raw[k].numpy()) for k in raw)
    assert np.array_equal(average['delta_std'].numpy(), raw['delta_std'].numpy())
    plain = load_tensors(train_bc(config(demos, tmp_path / 'plain', 4), progress=False) / 'model.safetensors')
    assert all(np.array_equal(plain[k].numpy(), raw[k].numpy()) for k in raw)   # the average leaves training alone
    assert TorchVLAPolicy(tmp_path / 'full' / 'last').predict_action_chunk(ArmEnv().reset('reach', 1000)).shape == (16, 7)
    with pytest.raises(ValueError, match='ema_decay'):
        BCConfig(ema_decay=1.0)


def test_the_held_padding_past_the_episode_end_is_trained_on_unless_masked():
    error = torch.zeros(2, 4, 3)
    error[0, 3] = 2.0                                   # wrong only on a padded step
    mask = torch.tensor([[True, True, True, False], [True] * 4])
    assert chunk_loss(error, mask, hold_after_end=False) == 0.0
    assert chunk_loss(error, mask, hold_after_end=True) == pytest.approx(4.0 * 3 / (2 * 4 * 3))


def test_step_weights_measure_each_chunk_step_relative_to_its_own_spread():
    delta_std = np.array([1.0, 2.0])
    step_std = np.array([[0.25, 2.0], [1.0, 2.0], [2.0, 2.0], [0.001, 2.0]])
    weights = step_weights(delta_std, step_std, max_ratio=100.0)
    raw = np.array([[16.0, 1.0], [1.0, 1.0], [0.25, 1.0], [100.0, 1.0]])   # last row: clipped
    np.testing.assert_allclose(weights.numpy(), raw / raw.mean(), rtol=1e-6)
    assert weights.mean().item() == pytest.approx(1.0)
    error = torch.zeros(1, 4, 2)
    error[0, 0, 0] = 1.0                                 # the same normalized error, early or late
    early = chunk_loss(error, torch.ones(1, 4, dtype=torch.bool), True, weights)
    late = chunk_loss(error.roll(2, dims=1), torch.ones(1, 4, dtype=torch.bool), True, weights)
    assert early.item() == pytest.approx(64 * late.item())   # 16 / 0.25


def test_bc_with_step_weighting_trains(demos, tmp_path):
    last = train_bc(replace(config(demos, tmp_path / 'run', 2), step_weighting=True), progress=False)
    losses = [float(line.split(',')[2]) for line in (tmp_path / 'run' / 'scalars.csv').read_text().splitlines()
              if ',loss,' in line]
    assert (last / 'model.safetensors').is_file() and len(losses) == 2 and np.isfinite(losses).all()


class _TwoTasks:
    """90 windows of a long task, 10 of a short one."""

    def __len__(self):
        return 100

    def task_windows(self):
        return {'long': np.arange(90), 'short': np.arange(90, 100)}

    def __getitem__(self, i):
        return {'image': np.zeros((8, 8, 3), np.uint8), 'instruction': 'x', 'state': np.zeros(2),
                'actions': np.full((4, 2), float(i)), 'action_mask': np.ones(4, bool)}


@pytest.mark.parametrize('balance, weights, short_share', [(True, None, 0.5), (False, None, 0.1),
                                                           (True, {'short': 3.0}, 0.75),
                                                           (True, {'long': 0.25}, 0.8)])
def test_task_balanced_batches_draw_tasks_in_proportion_to_their_weights(balance, weights, short_share):
    batches = Batches(_TwoTasks(), {'x': np.zeros(3, np.float32)}, balance_tasks=balance, task_weights=weights)
    windows = batches.sample(np.random.default_rng(0), 4000)['actions'][:, 0, 0]
    assert (windows >= 90).float().mean().item() == pytest.approx(short_share, abs=0.03)


def test_task_weights_are_checked_against_the_demos_and_the_config():
    with pytest.raises(ValueError, match=r"\['shrot'\], which the demos do not hold; their tasks: \['long', 'short'\]"):
        Batches(_TwoTasks(), {'x': np.zeros(3, np.float32)}, balance_tasks=True, task_weights={'shrot': 2.0})
    with pytest.raises(ConfigError, match='finite numbers > 0'):
        from_dict(BCConfig, {'task_weights': {'push': 0}})
    with pytest.raises(ConfigError, match='set balance_tasks: true'):
        from_dict(BCConfig, {'task_weights': {'push': 2}, 'balance_tasks': False})
    assert from_dict(BCConfig, {'task_weights': {'push': 2}}).task_weights == {'push': 2.0}


def test_takeover_demonstrations_start_where_the_policy_handed_over(demos, tmp_path):
    checkpoint = train_bc(config(demos, tmp_path / 'run', 2), progress=False)
    takeover = Takeover(PolicyConfig('torch', str(checkpoint)), ExecutionConfig(), SafetyConfig(), steps=(6, 6))
    out = tmp_path / 'takeover'
    paths = collect_demonstrations(['push'], 2, 'efficient', 0, out, workers=1, only_successful=False,
                                   progress=False, takeover=takeover)
    assert paths == [out / 'push' / 'efficient-0', out / 'push' / 'efficient-1']
    env = ArmEnv()
    episode = collect_episode(env, EfficientOperator(), 'push', 0, takeover=takeover,
                              policy=takeover.make_policy(env.joint_names))
    plain = collect_episode(env, EfficientOperator(), 'push', 0)
    assert episode.times[0] == pytest.approx(6 * ExecutionConfig().control_dt)  # recorded from the takeover on
    assert plain.times[0] == 0.0
    assert not np.allclose(episode.joint_positions[0], plain.joint_positions[0], atol=1e-3)  # the policy moved it
    assert np.array_equal(read_episode_bag(paths[0]).actions, episode.actions)
    summary = json.loads((out / 'index.json').read_text())['efficient']['tasks']['push']
    assert summary['mean_policy_steps'] == 6 and summary['policy_successes'] == 0 and summary['episodes'] == 2


def test_takeover_steps_are_drawn_per_seed_in_range_and_need_a_learned_policy_of_the_runs_h(make_tiny_checkpoint):
    baseline = PolicyConfig('torch', str(make_tiny_checkpoint(16)))
    takeover = Takeover(baseline, ExecutionConfig(), SafetyConfig(), steps=(10, 100))
    drawn = [takeover.policy_steps(seed) for seed in range(200)]
    assert drawn == [takeover.policy_steps(seed) for seed in range(200)]
    assert min(drawn) >= 10 and max(drawn) <= 100 and len(set(drawn)) > 50
    with pytest.raises(ValueError, match='learned policy'):
        Takeover(PolicyConfig('expert'), ExecutionConfig(), SafetyConfig())
    with pytest.raises(ValueError, match='0 <= lo <= hi'):
        Takeover(baseline, ExecutionConfig(), SafetyConfig(), steps=(20, 10))
    with pytest.raises(ValueError, match='predicts H = 32 steps; execution.chunk_size is 16'):
        Takeover(PolicyConfig('torch', str(make_tiny_checkpoint(32))), ExecutionConfig(), SafetyConfig())


def test_extra_demos_are_trained_on_with_the_demos(demos, tmp_path):
    with pytest.raises(FileNotFoundError, match='missing'):
        train_bc(replace(config(demos, tmp_path / 'bad', 2), extra_demos=(str(tmp_path / 'missing'),)),
                 progress=False)
    extra = tmp_path / 'extra'
    collect_demonstrations(['push'], 1, 'teleop', 0, extra, workers=1, progress=False)
    final = train_bc(replace(config(demos, tmp_path / 'run', 2), extra_demos=(str(extra),)), progress=False)
    assert json.loads((final.parent / 'config.json').read_text())['extra_demos'] == [str(extra)]


def test_bc_records_what_it_trained_on_and_strict_bags_stops_at_a_damaged_bag(demos, tmp_path, capsys):
    mixed = tmp_path / 'demos'
    shutil.copytree(demos, mixed)
    garbage = mixed / 'reach' / 'teleop-9'
    garbage.mkdir()
    (garbage / 'teleop-9.mcap').write_bytes(b'not an mcap file')
    steps = read_episode_bag(demos / 'reach' / 'teleop-0').steps
    with pytest.warns(BagWarning, match=f'skipped {garbage}'):
        train_bc(config(mixed, tmp_path / 'run', 2), progress=False)
    assert f'bc: training on 1 episodes, {steps} steps from 2 bags (1 skipped, 0 recovered' in capsys.readouterr().out
    manifest = json.loads((tmp_path / 'run' / 'dataset.json').read_text())
    assert (manifest['episodes'], manifest['steps'], manifest['bags']) == (1, steps, 2)
    assert manifest['skipped'][0]['bag'] == str(garbage) and 'no metadata.yaml' in manifest['skipped'][0]['reason']
    with pytest.raises(BagError, match=f'{garbage}: no metadata.yaml'):
        train_bc(replace(config(mixed, tmp_path / 'strict', 2), strict_bags=True), progress=False)
    shutil.rmtree(mixed / 'reach' / 'teleop-0')   # the demos changed under a run: it cannot resume the same
    shutil.rmtree(garbage)
    collect_demonstrations(['reach'], 1, 'teleop', 5, mixed, workers=1, progress=False)
    with pytest.raises(ValueError, match=f'trained on 1 episodes, {steps} steps; the demos now give 1 and'):
        train_bc(config(mixed, tmp_path / 'run', 4), resume=True, progress=False)


def scalar_rows(run):
    """(step, metric, value) of each scalars.csv row, the header included once per header written."""
    return [tuple(line.split(',')[:3]) for line in (run / 'scalars.csv').read_text().splitlines()]


@pytest.mark.parametrize('phase', ['first-save', 'second-save'])
def test_a_bc_run_killed_at_any_file_step_resumes_exactly(demos, tmp_path, file_steps, phase):
    """Kill a run with a weight average (last/, raw/ and checkpoints/ change together) before each
    file-system step of its first or second save, resume it, and get the uninterrupted run."""
    ema = lambda out, steps: replace(config(demos, out, steps), ema_decay=0.5)   # noqa: E731
    train_bc(ema(tmp_path / 'full', 4), progress=False)
    base = tmp_path / 'base'
    if phase == 'second-save':
        train_bc(ema(base, 2), progress=False)

    def killed_run(k):
        run = tmp_path / f'kill-{k}'
        if base.exists():
            shutil.copytree(base, run)
        file_steps.count, file_steps.kill_at = 0, k
        try:
            train_bc(ema(run, 2 if phase == 'first-save' else 4), resume=True, progress=False)
        finally:
            file_steps.kill_at = 0
        return run, file_steps.count

    _, total = killed_run(0)
    assert total > 10
    for k in range(1, total + 1):
        with pytest.raises(file_steps.Killed):
            killed_run(k)
        run = tmp_path / f'kill-{k}'
        if (run / 'scalars.csv').exists():
            with (run / 'scalars.csv').open('a') as f:
                f.write('3,lo')                               # and a row cut short
        train_bc(ema(run, 4), resume=True, progress=False)
        for folder in ('last', 'raw', 'checkpoints/step_000004'):
            full, resumed = (load_tensors(r / folder / 'model.safetensors') for r in (tmp_path / 'full', run))
            for key in full:
                assert np.array_equal(full[key].numpy(), resumed[key].numpy()), (k, folder, key)
        assert scalar_rows(run) == scalar_rows(tmp_path / 'full'), k   # one header, each step once
        assert sorted(p.name for p in run.iterdir()) == ['checkpoints', 'config.json', 'dataset.json', 'last', 'raw',
                                                        'scalars.csv'], k
