"""Smoke tests of the `policytrim` command with tiny budgets (CleanRL-style)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from policytrim_ros import launcher

CLI = [str(Path(sys.executable).parent / 'policytrim')]
REPO = Path(__file__).resolve().parents[2]


def run(*args):
    result = subprocess.run(CLI + list(args), env=launcher.ros_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def short_episodes(tmp_path, steps=40):
    """config/sim.yaml with episodes of at most ``steps`` steps: the fixture checkpoint reaches
    nothing, so its episodes run to the limit."""
    import yaml
    params = yaml.safe_load(launcher.params_file(None).read_text())
    params['policy_node']['ros__parameters']['execution']['max_episode_steps'] = steps
    path = tmp_path / f'max-{steps}-steps.yaml'
    path.write_text(yaml.safe_dump(params))
    return str(path)


def test_demo_prints_the_runs_side_by_side_and_writes_logs(tmp_path, tiny_checkpoint):
    out = run('demo', '--tasks', 'reach', '--episodes', '1', '--compare', f'other={tiny_checkpoint}@8',
              '--params', short_episodes(tmp_path), '--out', str(tmp_path / 'demo'))
    assert ('side by side (Spd (a) = inference calls of bc-wrist-h32-dagger at h = 4, Spd (b) = at h = 8' in out
            and 'Spd (a) vs h=4' in out and 'Spd (b) vs h=8' in out)
    tmp_path = tmp_path / 'demo'
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert [(r['policy'], r['n_action_steps'], r['chunk_size']) for r in summary['runs']] == [
        ('bc-wrist-h32-dagger', 4, 32), ('bc-wrist-h32-dagger', 8, 32), ('other', 8, 16)]   # each at its own H
    assert summary['best_h'] == 8
    assert (tmp_path / 'bc-wrist-h32-dagger-h8' / 'episodes.jsonl').read_text().count('\n') == 1
    assert (tmp_path / 'other-h8' / 'episodes.jsonl').read_text().count('\n') == 1


@pytest.mark.parametrize('policy', [['--backend', 'expert', '--tasks', 'reach', 'push'],
                                    ['--backend', 'torch', '--checkpoint', '{tiny}', '--tasks', 'reach']],
                         ids=['expert', 'vla'])
def test_eval_core_and_ros_paths_agree_on_the_same_seeds(tmp_path, policy, tiny_checkpoint):
    policy = [a.format(tiny=tiny_checkpoint) for a in policy]
    if '--checkpoint' in policy:
        policy = ['--params', short_episodes(tmp_path), *policy]
    common = [*policy, '--episodes', '1', '--n-action-steps', '4', '16', '--reference', '4']
    run('eval', *common, '--workers', '1', '--out', str(tmp_path / 'core'))
    run('eval', *common, '--ros', '--out', str(tmp_path / 'ros'))
    keys = ('task', 'n_action_steps', 'success_rate', 'steps', 'inference_calls', 'speedup')
    rows = {p: [{k: r[k] for k in keys} for r in json.loads((tmp_path / p / 'sweep.json').read_text())['rows']]
            for p in ('core', 'ros')}
    assert rows['core'] == rows['ros']
    assert (tmp_path / 'core' / 'sweep.png').stat().st_size > 0
    assert '| reach' in (tmp_path / 'core' / 'sweep.md').read_text()
    core_log = (tmp_path / 'core' / 'h16' / 'episodes.jsonl').read_text()
    core_episodes = [json.loads(line) for line in core_log.splitlines()]
    assert [e['task'] for e in core_episodes] == policy[policy.index('--tasks') + 1:]
    assert all('goal_distance' in e['end_state'] for e in core_episodes)


def test_a_two_camera_policy_runs_the_same_through_ros_as_in_the_core_loop(tmp_path):
    """collect -> train-bc -> eval with the scene and wrist cameras: sim_node publishes one topic per
    camera, policy_node subscribes to both and tiles them as the core loop does."""
    import yaml

    params = yaml.safe_load(launcher.params_file(None).read_text())
    params['sim_node']['ros__parameters']['env'].update(cameras=['scene_camera', 'wrist_camera'],
                                                         image_width=48, image_height=48)
    policy_node = params['policy_node']['ros__parameters']
    policy_node['execution']['max_episode_steps'] = 12
    # a 2-step policy jerks: let its chunks through (clipped onto the joint ranges) so episodes run
    policy_node['safety'].update(max_velocity=[100.0] * 7, position_margin=[10.0] * 7)
    (tmp_path / 'params.yaml').write_text(yaml.safe_dump(params))
    run('collect', '--tasks', 'reach', '--episodes', '1', '--workers', '1', '--params', str(tmp_path / 'params.yaml'),
        '--out', str(tmp_path / 'demos'))
    run('train-bc', '--set', f'demos={tmp_path / "demos"}', f'out_dir={tmp_path / "bc"}', 'steps=2', 'batch_size=4',
        'warmup_steps=1', 'eval_every=0', 'eval_episodes=0', 'checkpoint_every=2')
    config = json.loads((tmp_path / 'bc' / 'last' / 'config.json').read_text())['config']
    assert config['cameras'] == ['scene_camera', 'wrist_camera'] and config['image_width'] == 96
    common = ['--backend', 'torch', '--checkpoint', str(tmp_path / 'bc' / 'last'), '--tasks', 'reach', 'push',
              '--episodes', '1', '--n-action-steps', '4', '--params', str(tmp_path / 'params.yaml')]
    run('eval', *common, '--workers', '1', '--out', str(tmp_path / 'core'))
    run('eval', *common, '--ros', '--out', str(tmp_path / 'ros'))
    keys = ('task', 'success_rate', 'steps', 'inference_calls')
    rows = {p: [{k: r[k] for k in keys} for r in json.loads((tmp_path / p / 'sweep.json').read_text())['rows']]
            for p in ('core', 'ros')}
    assert rows['core'] == rows['ros']
    episodes = [json.loads(line) for line in (tmp_path / 'ros' / 'h4' / 'episodes.jsonl').read_text().splitlines()]
    assert [(e['end_reason'], e['steps'], e['inference_calls']) for e in episodes] == [('max_steps', 12, 3)] * 2


def test_cli_reports_bad_arguments_clearly(tmp_path):
    result = subprocess.run(CLI + ['eval', '--n-action-steps', '4', '64', '--out', str(tmp_path)],
                            capture_output=True, text=True, env=launcher.ros_env())
    assert result.returncode == 2 and 'n_action_steps (64) must be in [1, chunk_size (32)]' in result.stderr


def test_eval_runs_a_learned_checkpoint_at_its_own_chunk_size(tmp_path, make_tiny_checkpoint):
    run('eval', '--backend', 'torch', '--checkpoint', str(make_tiny_checkpoint(32)), '--tasks', 'reach', '--episodes', '1', '--n-action-steps', '32', '--reference', '32', '--workers', '1',
        '--out', str(tmp_path))
    row = json.loads((tmp_path / 'sweep.json').read_text())['rows'][0]
    assert (row['n_action_steps'], row['chunk_size']) == (32, 32)


def test_ros2_run_wrapper_runs_multi_process_commands(tmp_path):
    """lib/policytrim_ros/policytrim (what `ros2 run` starts) must survive spawned worker processes."""
    wrapper = str(launcher.executable('policytrim'))
    result = subprocess.run([wrapper, 'eval', '--tasks', 'reach', '--episodes', '1', '--n-action-steps', '4',
                             '--workers', '2', '--out', str(tmp_path)], env=launcher.ros_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / 'sweep.json').exists()


def test_set_overrides_read_yaml_values_and_plain_exponents():
    from policytrim_ros.cli.overrides import parse_overrides
    assert parse_overrides(['lr=5e-5', 'steps=10', 'tasks=[reach, push]', 'out_dir=runs/x', 'grpo={clip: 0.1}']) == {
        'lr': 5e-5, 'steps': 10, 'tasks': ['reach', 'push'], 'out_dir': 'runs/x', 'grpo': {'clip': 0.1}}


def test_a_dotted_set_key_changes_one_field_of_a_nested_mapping():
    from policytrim_ros.cli.overrides import with_overrides
    values = {'lr': 1.0, 'grpo': {'clip': 0.2, 'epochs': 1}}
    assert with_overrides(values, ['grpo.log_ratio=mean', 'steps.step_weight=0.5', 'lr=2']) == {
        'lr': 2, 'grpo': {'clip': 0.2, 'epochs': 1, 'log_ratio': 'mean'}, 'steps': {'step_weight': 0.5}}
    assert values == {'lr': 1.0, 'grpo': {'clip': 0.2, 'epochs': 1}}   # the loaded config is left alone
    with pytest.raises(ValueError, match='lr is not a mapping'):
        with_overrides(values, ['lr.x=1'])


def test_horizon_curve_bench_runs_every_cell_on_the_same_seeds(tmp_path):
    head = 'package://policytrim_ros/models/horizon-wrist-h32-dagger'
    command = [sys.executable, str(REPO / 'bench' / 'horizon_curve.py'), '--head', head, '--policytrim', '',
               '--horizons', '8', '32', '--default-h', '8', '--tasks', 'reach', '--episodes', '2',
               '--ros-episodes', '0', '--workers', '1', '--out', str(tmp_path)]
    done = subprocess.run(command, env=launcher.ros_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / 'curve.json').read_text())
    cells = [(r['task'], r['policy'], r['horizon']) for r in report['rows']]
    assert cells == [(t, p, h) for t in ('reach', 'all') for p, h in (
        ('baseline', '8'), ('baseline', '32'), ('efficiency head', 'learned'),
        ('baseline, replan on divergence', 'divergence'))]
    for row in report['rows']:
        assert row['episodes'] == 2 and row['success_rate_low'] <= row['success_rate'] <= row['success_rate_high']
    assert (tmp_path / 'curve.png').stat().st_size > 0 and 'SR 95% low' in (tmp_path / 'curve.md').read_text()
    bad = subprocess.run(command[:2] + ['--head', head, '--horizons', '8', '32', '--default-h', '4'],
                         env=launcher.ros_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and '--default-h 4 must be one of --horizons [8, 32]' in bad.stderr


def test_efficiency_bench_compares_a_method_with_the_baseline_sweep(tmp_path, tiny_checkpoint):
    from policytrim_ros import resources
    from policytrim_ros.policy.checkpoint import load_checkpoint, save_checkpoint
    baseline = 'package://policytrim_ros/models/bc-wrist-more-ft'   # H = 16; its best h needs successes
    model, _, _ = load_checkpoint(resources.resolve(baseline))
    longer = model.extended(24)     # a method of another H than the baseline's 16
    save_checkpoint(tmp_path / 'h24', longer, longer.config, {})
    command = [sys.executable, str(REPO / 'bench' / 'efficiency.py'), '--tasks', 'reach', '--episodes', '2',
               '--baseline-h', '4', '16', '--method', f'long={tmp_path / "h24"}@24',
               '--ablation', f'again={tiny_checkpoint}@8', '--ablation-task', 'reach',
               '--ros-episodes', '0', '--workers', '1', '--out', str(tmp_path),
               '--baseline', baseline]
    done = subprocess.run(command, env=launcher.ros_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / 'efficiency.json').read_text())
    policies = {(r['task'], r['policy']) for r in report['rows']}
    assert {('reach', 'baseline (default h)'), ('reach', 'baseline (best h)'), ('reach', 'long'), ('all', 'long')} <= policies
    long_row = next(r for r in report['rows'] if r['policy'] == 'long' and r['task'] == 'reach')
    assert (long_row['n_action_steps'], long_row['chunk_size'], long_row['episodes']) == (24, 24, 2)
    assert [r['policy'] for r in report['ablation_rows']][-1] == 'again'
    assert (tmp_path / 'efficiency.png').stat().st_size > 0 and 'Spd (a) vs default h' in (tmp_path / 'efficiency.md').read_text()
    bad = subprocess.run(command[:6] + ['--method', 'nope'], env=launcher.ros_env(), capture_output=True, text=True)
    assert bad.returncode == 2 and 'expected NAME=CHECKPOINT@h' in bad.stderr
    plain = subprocess.run(command[:6] + ['--method', f'bc={tiny_checkpoint}'],
                           env=launcher.ros_env(), capture_output=True, text=True)
    assert plain.returncode == 2 and 'neither a PolicyTrim Stage 2 checkpoint nor one with an efficiency head' in plain.stderr
    mixed = subprocess.run(command[:3] + ['reach', 'push-v3'] + command[4:], env=launcher.ros_env(),
                           capture_output=True, text=True)
    assert mixed.returncode == 2 and 'mix embedded arm tasks' in mixed.stderr
    elsewhere = subprocess.run(command + ['--ablation-task', 'push'], env=launcher.ros_env(), capture_output=True,
                               text=True)
    assert elsewhere.returncode == 2 and '--ablation-task push must be one of --tasks' in elsewhere.stderr
    # the folder now holds this comparison's results: another pair may not write into it
    another = subprocess.run(command[:-2] + ['--baseline', str(tmp_path / 'h24')], env=launcher.ros_env(),
                             capture_output=True, text=True)
    assert another.returncode == 2, another.stderr[-2000:]
    assert f'--out {tmp_path} holds the results of another comparison (bc-wrist-more-ft-vs-h24)' in another.stderr


def test_efficiency_bench_runs_a_stage2_checkpoint_with_h_per_task_at_each_tasks_h(tmp_path):
    from policytrim_ros import resources
    from policytrim_ros.policy.checkpoint import load_checkpoint, save_checkpoint
    baseline = 'package://policytrim_ros/models/bc-wrist-more-ft'
    model, config, _ = load_checkpoint(resources.resolve(baseline))
    trained = {'n_action_steps': 16, 'task_n_action_steps': {'push': 8}}
    save_checkpoint(tmp_path / 's2', model, config, {'policytrim_stage': 2, 'policytrim_config': trained})
    command = [sys.executable, str(REPO / 'bench' / 'efficiency.py'), '--tasks', 'reach', 'push', '--episodes', '1',
               '--baseline-h', '4', '16', '--method', f'per-task={tmp_path / "s2"}', '--ros-episodes', '0',
               '--workers', '1', '--out', str(tmp_path / 'out'), '--baseline', baseline]
    done = subprocess.run(command, env=launcher.ros_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'per-task: ' in done.stdout and 'at h per task: reach 16, push 8' in done.stdout
    report = json.loads((tmp_path / 'out' / 'efficiency.json').read_text())
    rows = {r['task']: r for r in report['rows'] if r['policy'] == 'per-task'}
    assert (rows['reach']['n_action_steps'], rows['push']['n_action_steps'], rows['all']['episodes']) == (16, 8, 2)
    assert report['methods']['per-task']['task_n_action_steps'] == {'push': 8}


def test_demo_runs_the_baseline_at_the_default_and_best_h_then_the_shipped_efficiency_head():
    import argparse

    from policytrim_ros.cli.demo import demo_runs
    args = argparse.Namespace(backend=None, checkpoint=None, n_action_steps=None, chunk_size=None, compare=None)
    shown = {'backend': 'torch', 'checkpoint': 'package://policytrim_ros/models/bc-wrist-h32-dagger'}
    runs = demo_runs(args, shown, 32, 8)
    assert [(label, h, H) for label, _, h, H in runs] == [('bc-wrist-h32-dagger', 4, 32),
                                                          ('bc-wrist-h32-dagger', 8, 32), ('head', 32, 32)]
    assert runs[2][1] == {'policy.backend': 'torch',
                          'policy.checkpoint': 'package://policytrim_ros/models/horizon-wrist-h32-dagger',
                          'execution.chunk_size': 32, 'execution.n_action_steps': 32, 'execution.horizon': 'learned'}
    stage2 = argparse.Namespace(**{**vars(args), 'compare': [
        'policytrim=package://policytrim_ros/models/policytrim-wrist-h32-dagger']})
    assert demo_runs(stage2, shown, 32, 8)[2][1]['execution.horizon'] == 'fixed'
    expert = argparse.Namespace(**{**vars(args), 'backend': 'expert'})
    assert [(label, h) for label, _, h, _ in demo_runs(expert, {'backend': 'expert'}, 16, 8)] == [
        ('expert', 4), ('expert', 8)]
    assert [h for _, _, h, _ in demo_runs(expert, {'backend': 'expert'}, 4, 8)] == [4]   # both capped at H: once
    # a --compare policy runs at its own H, whatever the first policy's
    other = argparse.Namespace(**{**vars(args), 'compare': ['short=package://policytrim_ros/models/bc-wrist-more-ft@16']})
    assert [(h, H) for _, _, h, H in demo_runs(other, shown, 32, 8)] == [(4, 32), (8, 32), (16, 16)]


def test_collect_runs_the_env_of_the_params_file(tmp_path):
    import yaml

    from policytrim_ros.data.bag import read_episode_bag
    params = yaml.safe_load(launcher.params_file(None).read_text())
    params['sim_node']['ros__parameters']['env'].update(cameras=['workspace_camera', 'wrist_camera'],
                                                         image_width=64, image_height=48)
    (tmp_path / 'params.yaml').write_text(yaml.safe_dump(params))
    run('collect', '--tasks', 'reach', '--episodes', '1', '--style', 'efficient', '--workers', '1',
        '--params', str(tmp_path / 'params.yaml'), '--out', str(tmp_path / 'demos'))
    episode = read_episode_bag(tmp_path / 'demos' / 'reach' / 'efficient-0')
    assert episode.success and episode.images.shape[1:] == (48, 128, 3)
    assert episode.cameras == ('workspace_camera', 'wrist_camera')


def test_collect_takeover_lets_a_learned_policy_drive_first_at_its_own_chunk_size(tmp_path, tiny_checkpoint):
    # the checkpoint predicts H = 16 steps, the params file's execution.chunk_size is 32
    run('collect', '--tasks', 'pick_place', '--episodes', '1', '--style', 'efficient', '--workers', '1',
        '--takeover', str(tiny_checkpoint), '--takeover-steps', '8', '8',
        '--out', str(tmp_path / 'demos'))
    summary = json.loads((tmp_path / 'demos' / 'index.json').read_text())['efficient']['tasks']['pick_place']
    assert summary['mean_policy_steps'] == 8 and summary['policy_successes'] == 0
    assert summary['bags'] == ['pick_place/efficient-0']


def edit_action_offsets(directory):
    path = directory / 'config.json'
    data = json.loads(path.read_text())
    data['config']['action_offsets'] = not data['config']['action_offsets']
    path.write_text(json.dumps(data))


def truncate_weights(directory):
    path = directory / 'model.safetensors'
    path.write_bytes(path.read_bytes()[:1000])


@pytest.mark.parametrize('command, damage', [
    (['release', '{ckpt}', '{tmp}/out'], lambda d: shutil.rmtree(d)),
    (['export-onnx', '{ckpt}'], edit_action_offsets),
    (['train', '--stage', '1', '--set', 'init={ckpt}', 'out_dir={tmp}/run', 'workers=0'], edit_action_offsets),
    # the weights load in the worker processes: a pool whose workers fail to start used to hang
    (['eval', '--backend', 'torch', '--checkpoint', '{ckpt}', '--tasks', 'reach', '--episodes', '1',
      '--n-action-steps', '4', '--workers', '2', '--out', '{tmp}/eval'], truncate_weights),
    (['collect', '--tasks', 'reach', '--episodes', '2', '--workers', '2', '--takeover', '{ckpt}',
      '--out', '{tmp}/demos'], truncate_weights),
], ids=['release-missing', 'export-edited', 'train-edited', 'eval-truncated', 'collect-truncated'])
def test_a_bad_checkpoint_stops_a_command_with_one_line_and_rc_2(tmp_path, tiny_checkpoint, command, damage):
    checkpoint = tmp_path / 'ckpt'
    shutil.copytree(tiny_checkpoint, checkpoint)
    damage(checkpoint)
    args = [a.format(ckpt=checkpoint, tmp=tmp_path) for a in command]
    # this checkout's cli (the installed `policytrim` may be another build)
    result = subprocess.run([sys.executable, '-m', 'policytrim_ros.cli', *args], cwd=REPO, env=launcher.ros_env(),
                            capture_output=True, text=True, timeout=240)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f'policytrim {args[0]}: error: ') and str(checkpoint) in lines[0]
