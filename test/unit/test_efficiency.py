"""Spd (a) and (b) of the efficiency benchmark, on hand-made episodes."""
import math

import pytest

from policytrim_ros import constants as C
from policytrim_ros.evaluation.efficiency import (SPEEDUP_BEST, SPEEDUP_DEFAULT, SR_DELTA, PolicySpec, best_fixed_h,
                                                  checkpoint_name, comparison_name, comparison_rows,
                                                  other_comparison_in)
from policytrim_ros.execution.metrics import EpisodeMetrics


def episodes(task, h, outcomes, steps):
    """Episodes of ``task`` at h: one per outcome, successful ones ``steps`` long (calls = steps / h)."""
    return [EpisodeMetrics(f'{task}-{k}', task, 'do it', ok, steps if ok else 150, math.ceil(steps / h) if ok else 99,
                           h, 16, h / 16, 0.1, 'success' if ok else 'max_steps') for k, ok in enumerate(outcomes)]


def summary(sr, calls):
    return {C.SUCCESS_RATE: sr, C.INFERENCE_CALLS: calls}


def test_best_fixed_h_takes_the_fewest_calls_within_the_tolerance_of_the_best_sr():
    sweep = {1: summary(0.50, 80.0), 4: summary(0.90, 20.0), 8: summary(0.89, 10.0), 16: summary(0.70, 5.0)}
    assert best_fixed_h(sweep, tolerance=0.02) == 8      # 16 is cheaper but 20 points worse
    assert best_fixed_h(sweep, tolerance=0.0) == 4
    assert best_fixed_h(sweep, tolerance=0.25) == 16
    with pytest.raises(ValueError, match='no h'):
        best_fixed_h({4: summary(0.0, math.nan)})


def test_comparison_rows_report_spd_against_the_default_and_the_best_h():
    baseline = {4: episodes('push', 4, [True] * 9 + [False], 80),      # SR 0.9, 20 calls
                8: episodes('push', 8, [True] * 9 + [False], 80),      # SR 0.9, 10 calls: the best fixed h
                16: episodes('push', 16, [True] * 5 + [False] * 5, 80)}  # SR 0.5, 5 calls
    method = episodes('push', 16, [True] * 9 + [False], 40)              # SR 0.9, 3 calls
    rows = {r['policy']: r for r in comparison_rows(baseline, 4, {'policytrim': method}) if r['task'] == 'push'}
    assert rows['baseline (best h)'][C.N_ACTION_STEPS] == 8
    assert rows['policytrim'][SPEEDUP_DEFAULT] == pytest.approx(20 / 3)
    assert rows['policytrim'][SPEEDUP_BEST] == pytest.approx(10 / 3)
    assert rows['policytrim'][SR_DELTA] == pytest.approx(0.0)
    assert rows['baseline (default h)'][SPEEDUP_DEFAULT] == 1.0


def test_a_method_on_some_tasks_gets_no_pooled_row():
    baseline = {4: episodes('reach', 4, [True], 20) + episodes('push', 4, [True], 80)}
    rows = comparison_rows(baseline, 4, {'step only': episodes('push', 16, [True], 40)})
    assert ('all', 'step only') not in {(r['task'], r['policy']) for r in rows}
    assert ('push', 'step only') in {(r['task'], r['policy']) for r in rows}
    with pytest.raises(ValueError, match='default h 2'):
        comparison_rows(baseline, 2, {})


def test_results_are_named_after_the_checkpoints_compared():
    assert checkpoint_name('package://policytrim_ros/models/policytrim-wrist') == 'policytrim-wrist'
    assert checkpoint_name('runs/policytrim-ft/stage2/last') == 'policytrim-ft-stage2-last'
    assert checkpoint_name('runs/x/checkpoints/iter_00010/') == 'x-checkpoints-iter_00010'
    methods = [PolicySpec('policytrim', 'models/policytrim-wrist', 16), PolicySpec('b', 'runs/b/last', 4)]
    assert comparison_name('package://policytrim_ros/models/bc-wrist-more-ft', methods) == \
        'bc-wrist-more-ft-vs-policytrim-wrist+b-last'


def test_a_results_folder_of_another_comparison_is_named_and_the_same_one_may_be_rerun(tmp_path):
    import json
    ours = [PolicySpec('policytrim', 'package://policytrim_ros/models/policytrim-wrist', 16)]
    assert other_comparison_in(tmp_path, 'models/bc-wrist-more-ft', ours) is None          # empty folder
    (tmp_path / 'efficiency.json').write_text(json.dumps({
        'baseline': 'package://policytrim_ros/models/bc-wrist-more-ft',
        'methods': {'policytrim': {'checkpoint': 'models/policytrim-wrist', 'n_action_steps': 16}}}))
    assert other_comparison_in(tmp_path, 'models/bc-wrist-more-ft', ours) is None          # the same pair
    other = [PolicySpec('policytrim', 'models/policytrim-wrist-h32-dagger', 8)]
    assert other_comparison_in(tmp_path, 'models/bc-wrist-h32-dagger', other) == \
        'bc-wrist-more-ft-vs-policytrim-wrist'
    (tmp_path / 'efficiency.json').write_text('{}')
    assert 'unreadable' in other_comparison_in(tmp_path, 'models/bc-wrist-h32-dagger', other)


def test_a_checkpoint_with_an_efficiency_head_runs_with_h_learned(tiny_horizon_checkpoint, tiny_checkpoint):
    from policytrim_ros.evaluation.efficiency import PolicySpec, parse_policy_spec
    spec = parse_policy_spec(f'head={tiny_horizon_checkpoint}')
    assert spec == PolicySpec('head', str(tiny_horizon_checkpoint), 16, 'learned')
    assert spec.overrides['execution.horizon'] == 'learned' and spec.overrides['execution.chunk_size'] == 16
    assert parse_policy_spec(f'head={tiny_horizon_checkpoint}@8').horizon == 'fixed'   # @h: that fixed h
    with pytest.raises(ValueError, match='nor one with an efficiency head'):
        parse_policy_spec(f'bc={tiny_checkpoint}')


def test_a_stage2_checkpoint_with_h_per_task_runs_each_task_at_its_h(tiny_checkpoint, tmp_path):
    from policytrim_ros.evaluation.efficiency import parse_policy_spec
    from policytrim_ros.policy.checkpoint import load_checkpoint, save_checkpoint
    model = load_checkpoint(tiny_checkpoint)[0]
    trained = {'n_action_steps': 16, 'task_n_action_steps': {'push': 8}}
    save_checkpoint(tmp_path / 's2', model, model.config, {'policytrim_stage': 2, 'policytrim_config': trained})
    spec = parse_policy_spec(f"policytrim={tmp_path / 's2'}")
    assert (spec.task_horizon('reach'), spec.task_horizon('push')) == (16, 8)
    assert spec.horizon_groups(['reach', 'push', 'pick_place']) == {16: ['reach', 'pick_place'], 8: ['push']}
    assert spec.overrides_at(8)['execution.n_action_steps'] == 8
    with pytest.raises(ValueError, match=r"runs each task at its own h \{'push': 8\}"):
        spec.overrides   # one policy_node parameter cannot hold them
    uniform = {'n_action_steps': 16, 'task_n_action_steps': {'reach': 16, 'push': 16}}
    save_checkpoint(tmp_path / 'u', model, model.config, {'policytrim_stage': 2, 'policytrim_config': uniform})
    assert parse_policy_spec(f"policytrim={tmp_path / 'u'}").overrides['execution.n_action_steps'] == 16
    fixed = parse_policy_spec(f"policytrim={tmp_path / 's2'}@4")          # @h: that h on every task
    assert fixed.horizon_groups(['reach', 'push']) == {4: ['reach', 'push']}


def test_wilson_interval_and_the_curve_rows_of_hand_made_cells():
    from policytrim_ros.evaluation.efficiency import curve_rows, wilson_interval
    low, high = wilson_interval(9, 10)
    assert (round(low, 4), round(high, 4)) == (0.5958, 0.9821)   # the textbook values for 9 / 10
    assert all(math.isnan(x) for x in wilson_interval(0, 0))     # no episodes
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0

    def episodes(h, successes, calls):
        return [EpisodeMetrics(f'e{i}', 'reach', 'go', i < successes, 40, calls, h, 32, h / 32, 1.0,
                               'success' if i < successes else 'max_steps') for i in range(10)]
    cells = {('baseline', '4'): episodes(4, 10, 12), ('baseline', '8'): episodes(8, 10, 6),
             ('baseline', '32'): episodes(32, 7, 2), ('head', 'learned'): episodes(32, 10, 3)}
    rows = {(r['task'], r['policy'], r['horizon']): r for r in curve_rows(cells, 'baseline', '4')}
    head = rows[('all', 'head', 'learned')]
    assert head['best_h'] == 8                                  # h = 32 is 3 points below the best SR
    assert (head['speedup_vs_default_h'], head['speedup_vs_best_h']) == (4.0, 2.0)
    assert head['success_rate_delta'] == 0.0 and head['success_rate_low'] == pytest.approx(0.7225, abs=1e-4)
