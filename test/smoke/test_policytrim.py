"""PolicyTrim end to end with a tiny budget: one iteration of each stage on a shipped baseline,
and a resumed run that ends with exactly the weights of an uninterrupted one."""
import csv
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from policytrim_ros import resources
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.execution.config import SafetyConfig
from policytrim_ros.policy.checkpoint import load_tensors
from policytrim_ros.training.exploration import ExplorationConfig
from policytrim_ros.training.grpo import GRPOConfig
from policytrim_ros.training.trainer import PolicyTrimConfig, train_policytrim

# The shipped H = 16 arm baseline (config/training/policytrim.yaml's init): these tests need a policy
# that reaches, so that groups carry signal; it sees both cameras, so the env renders both.
BASELINE = 'package://policytrim_ros/models/bc-wrist-more-ft'
ENV = EnvConfig(cameras=('scene_camera', 'wrist_camera'))
TINY = PolicyTrimConfig(init=BASELINE, tasks=('reach',), iterations=1, groups_per_iteration=2, group_size=3,
                        max_episode_steps=30, workers=0, checkpoint_every=1, log_std=-2.0,
                        grpo=GRPOConfig(minibatch_size=16))


def scalars(run):
    with (run / 'scalars.csv').open() as f:
        return {row['metric']: float(row['value']) for row in csv.DictReader(f)}


def test_rollouts_ended_by_a_refused_chunk_are_counted_in_error_rate(tmp_path):
    crawl = SafetyConfig(max_velocity=(1e-3,) * 7)        # no chunk of the baseline moves this slowly
    train_policytrim(replace(TINY, out_dir=str(tmp_path / 'refused')), safety=crawl, env=ENV, progress=False)
    logged = scalars(tmp_path / 'refused')
    assert logged['error_rate'] == 1.0 and logged['success_rate'] == 0.0
    assert logged['group_filter_rate'] == 1.0             # no group with a success: nothing to learn from
    assert [logged[f'error_rate_h{h}'] for h in (4, 10, 16)] == [1.0, 1.0, 1.0]   # per h of Gamma


def test_one_stage1_iteration_cycles_gamma_and_updates_the_policy(tmp_path):
    final = train_policytrim(replace(TINY, out_dir=str(tmp_path / 's1')), env=ENV, progress=False)
    logged = scalars(tmp_path / 's1')
    assert logged['n_action_steps'] == 10.0              # Gamma = 0.25, 0.625, 1 -> h = 4, 10, 16 in each group
    assert {'reward', 'success_rate', 'steps', 'group_filter_rate', 'error_rate', 'kl', 'clip_fraction'} <= set(logged)
    assert logged['error_rate'] == 0.0 and logged['windows'] > 0 and 'success_rate_h16' in logged
    assert logged['success_rate'] > 0                     # the baseline reaches; the groups carry signal
    assert (tmp_path / 's1' / 'checkpoints' / 'iter_00001').is_dir()
    before = load_tensors(resources.resolve(TINY.init) + '/model.safetensors')['action_head.weight'].float()
    after = load_tensors(final / 'model.safetensors')['action_head.weight']
    assert not np.array_equal(before.numpy(), after.numpy())   # a GRPO step was taken


@pytest.mark.parametrize('estimator, correlation', [('k3', 0.0), ('exact', 0.8)])
def test_the_kl_anchor_starts_at_the_policy_it_anchors(tmp_path, estimator, correlation):
    # one gradient step, taken from the init: KL(pi || pi_ref) there is 0, also when log_std
    # overrides the init's own exploration std (the reference must sample at the same std), and
    # with chunk-correlated exploration noise (rollouts drawn and scored with it)
    config = replace(TINY, groups_per_iteration=4,
                     grpo=GRPOConfig(minibatch_size=4096, kl_coef=0.5, kl_estimator=estimator),
                     exploration=ExplorationConfig(correlation=correlation), out_dir=str(tmp_path / 'kl'))
    train_policytrim(config, env=ENV, progress=False)
    logged = scalars(tmp_path / 'kl')
    assert logged['windows'] > 0 and logged['kl'] == pytest.approx(0.0, abs=1e-6)


def test_one_stage2_iteration_at_a_fixed_h(tmp_path):
    config = replace(TINY, stage=2, n_action_steps=16, step_budget={'reach': 30.0}, out_dir=str(tmp_path / 's2'))
    train_policytrim(config, env=ENV, progress=False)
    logged = scalars(tmp_path / 's2')
    assert logged['n_action_steps'] == 16.0 and not any(k.startswith('success_rate_h') for k in logged)
    with pytest.raises(ValueError, match='stage 2 needs n_action_steps'):
        replace(TINY, stage=2)


def test_resumed_policytrim_run_matches_an_uninterrupted_one(tmp_path):
    train_policytrim(replace(TINY, iterations=2, out_dir=str(tmp_path / 'full')), env=ENV, progress=False)
    train_policytrim(replace(TINY, iterations=1, out_dir=str(tmp_path / 'split')), env=ENV, progress=False)
    train_policytrim(replace(TINY, iterations=2, out_dir=str(tmp_path / 'split')), resume=True, env=ENV, progress=False)
    full = load_tensors(tmp_path / 'full' / 'last' / 'model.safetensors')
    split = load_tensors(tmp_path / 'split' / 'last' / 'model.safetensors')
    for key in full:
        assert np.array_equal(full[key].numpy(), split[key].numpy()), key


def test_policytrim_train_command_runs_a_stage_from_the_shipped_config(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from policytrim_ros import launcher
    repo = Path(__file__).resolve().parents[2]
    command = [str(Path(sys.executable).parent / 'policytrim'), 'train', '--stage', '1',
               '--config', str(repo / 'config' / 'training' / 'policytrim.yaml'), '--set', 'iterations=1',
               'groups_per_iteration=1', 'group_size=3', 'max_episode_steps=20', 'workers=0', 'tasks=[reach]',
               f'out_dir={tmp_path / "run"}']
    done = subprocess.run(command, env=launcher.ros_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'final checkpoint' in done.stdout and (tmp_path / 'run' / 'last' / 'config.json').is_file()
    bad = subprocess.run(command[:-1] + ['grpo={clp: 0.1}'], env=launcher.ros_env(), capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown config key 'grpo.clp' (did you mean 'clip'?)" in bad.stderr


def test_stage_all_selects_h_and_per_task_budgets_then_runs_stage2_and_resumes_without_rework(tmp_path):
    from policytrim_ros.training.pipeline import run_policytrim
    from policytrim_ros.training.stages import SelectionConfig
    config = replace(TINY, max_episode_steps=40,
                     selection=SelectionConfig(episodes=2, tolerance=0.99, task_tolerance=0.99, per_task=True),
                     out_dir=str(tmp_path / 'all'))
    final = run_policytrim(config, env=ENV, progress=False)
    plan = json.loads((tmp_path / 'all' / 'selection.json').read_text())
    assert final == tmp_path / 'all' / 'stage2' / 'last'
    assert plan['n_action_steps'] == 16                  # tolerance 0.99 admits every h of Gamma: the largest wins
    assert plan['selection']['task_tolerance'] == 0.99
    assert set(plan['stage1']['by_h']) == {'4', '10', '16'} and plan['baseline']['n_action_steps'] == 4
    reach_steps = plan['stage1']['by_h']['16']['reach']['steps']
    assert plan['step_budget']['reach'] == pytest.approx(1.3 * reach_steps, abs=0.01)
    stage2 = json.loads((tmp_path / 'all' / 'stage2' / 'config.json').read_text())
    assert stage2['init'] == str(tmp_path / 'all' / 'stage1' / 'last') and stage2['step_budget'] == plan['step_budget']
    assert plan['task_n_action_steps'] == stage2['task_n_action_steps'] == {'reach': 16}   # per_task: h per task
    assert scalars(tmp_path / 'all' / 'stage2')['n_action_steps'] == 16.0
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / 'all').rglob('*.safetensors')}
    assert run_policytrim(config, resume=True, env=ENV, progress=False) == final   # both stages and the plan are done
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / 'all').rglob('*.safetensors')} == stamp
    with pytest.raises(FileExistsError):
        run_policytrim(config, env=ENV, progress=False)


def test_a_policytrim_run_killed_at_any_file_step_of_a_save_resumes_exactly(tmp_path, file_steps):
    """Kill the run before each file-system step of its second save (checkpoints/ and last/ with
    the optimizer state change together), resume it, and get the uninterrupted run."""
    two = lambda out: replace(TINY, iterations=2, out_dir=str(out))   # noqa: E731
    train_policytrim(two(tmp_path / 'full'), env=ENV, progress=False)
    train_policytrim(replace(TINY, iterations=1, out_dir=str(tmp_path / 'base')), env=ENV, progress=False)

    def killed_run(k):
        run = tmp_path / f'kill-{k}'
        shutil.copytree(tmp_path / 'base', run)
        file_steps.count, file_steps.kill_at = 0, k
        try:
            train_policytrim(two(run), resume=True, env=ENV, progress=False)
        finally:
            file_steps.kill_at = 0
        return run, file_steps.count

    _, total = killed_run(0)
    assert total > 5
    rows = lambda run: [line.split(',')[:3] for line in (run / 'scalars.csv').read_text().splitlines()]  # noqa: E731
    for k in range(1, total + 1):
        with pytest.raises(file_steps.Killed):
            killed_run(k)
        run = tmp_path / f'kill-{k}'
        train_policytrim(two(run), resume=True, env=ENV, progress=False)
        for folder in ('last', 'checkpoints/iter_00002'):
            full, resumed = (load_tensors(r / folder / 'model.safetensors') for r in (tmp_path / 'full', run))
            for key in full:
                assert np.array_equal(full[key].numpy(), resumed[key].numpy()), (k, folder, key)
        assert rows(run) == rows(tmp_path / 'full'), k   # one header, each iteration once
