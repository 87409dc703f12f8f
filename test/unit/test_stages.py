"""The stage plan: Gamma, horizons, group membership, the Stage 2 h and step budget."""
import pytest

from policytrim_ros.training.stages import (SelectionConfig, acceptance_horizons, acceptance_ratios, group_jobs,
                                            stage2_horizon, step_budget, task_stage2_horizons)


def test_gamma_starts_at_the_models_own_h_and_ends_at_the_whole_chunk():
    assert acceptance_ratios(4, 16) == (0.25, 0.625, 1.0)
    assert acceptance_horizons(acceptance_ratios(4, 16), 16) == (4, 10, 16)
    assert acceptance_horizons(acceptance_ratios(5, 15), 15) == (5, 10, 15)   # the paper's LIBERO set
    assert acceptance_ratios(16, 16, count=1) == (1.0,)


def test_every_h_is_in_every_group_and_members_explore_differently():
    jobs = group_jobs('push', 1234, (4, 10, 16), group_size=8, noise_seed=100)
    assert [j.n_action_steps for j in jobs] == [4, 10, 16, 4, 10, 16, 4, 10]    # 3 x h4, 3 x h10, 2 x h16
    assert {(j.task, j.seed) for j in jobs} == {('push', 1234)}
    assert len({j.noise_seed for j in jobs}) == 8 and len({j.episode_id for j in jobs}) == 8
    with pytest.raises(ValueError, match=r'group_size \(2\) must be >= the number of horizons \(3\)'):
        group_jobs('push', 1, (4, 10, 16), group_size=2, noise_seed=0)


def test_stage2_takes_the_longest_h_within_the_tolerance_of_the_baseline():
    sweep = {4: 0.80, 10: 0.79, 16: 0.70}
    assert stage2_horizon(sweep, baseline_success_rate=0.80, tolerance=0.02) == 10
    assert stage2_horizon(sweep, baseline_success_rate=0.80, tolerance=0.10) == 16
    with pytest.raises(ValueError, match='no h of the sweep'):
        stage2_horizon(sweep, baseline_success_rate=0.95, tolerance=0.02)


def test_task_tolerance_keeps_one_task_from_paying_for_the_others():
    # pooled, h = 16 is as good as the baseline, but push loses 12 points (the Meta-World pair, docs/experiments.md section 3.2)
    pooled = {4: 0.78, 10: 0.80, 16: 0.81}
    by_task = {4: {'reach': 0.80, 'push': 0.78}, 10: {'reach': 0.86, 'push': 0.74},
               16: {'reach': 0.96, 'push': 0.66}}
    baseline = {'reach': 0.78, 'push': 0.78}
    assert stage2_horizon(pooled, 0.78, 0.02) == 16
    assert stage2_horizon(pooled, 0.78, 0.02, by_task, baseline, task_tolerance=0.05) == 10
    assert stage2_horizon(pooled, 0.78, 0.02, by_task, baseline, task_tolerance=0.15) == 16
    with pytest.raises(ValueError, match=r'and every task within 0.0 of its own'):
        stage2_horizon(pooled, 0.78, 0.02, by_task, {'reach': 0.78, 'push': 0.90}, task_tolerance=0.0)
    with pytest.raises(ValueError, match='needs the per-task success rates'):
        stage2_horizon(pooled, 0.78, 0.02, task_tolerance=0.05)


def test_per_task_selection_gives_each_task_its_longest_h_within_its_own_tolerance():
    by_task = {4: {'reach': 0.80, 'push': 0.78, 'pick': 0.50}, 10: {'reach': 0.86, 'push': 0.77, 'pick': 0.55},
               16: {'reach': 0.96, 'push': 0.66, 'pick': 0.55}}
    baseline = {'reach': 0.78, 'push': 0.78, 'pick': 0.70}
    # push keeps 0.77 >= 0.78 - 0.02 at h = 10 only; pick never comes within 0.02: its best SR, the longer h on a tie
    assert task_stage2_horizons(by_task, baseline, 0.02) == {'reach': 16, 'push': 10, 'pick': 16}
    assert task_stage2_horizons(by_task, baseline, 0.0) == {'reach': 16, 'push': 4, 'pick': 16}
    assert task_stage2_horizons(by_task, baseline, 0.2) == {'reach': 16, 'push': 16, 'pick': 16}


def test_stage2_jobs_run_each_task_at_its_own_h():
    from policytrim_ros.training.trainer import PolicyTrimConfig, iteration_jobs, stage_horizons
    config = PolicyTrimConfig(stage=2, tasks=('reach', 'push'), n_action_steps=16, task_n_action_steps={'push': 8},
                              step_budget={'reach': 40.0, 'push': 90.0}, groups_per_iteration=4, group_size=2)
    assert stage_horizons(config, 16) == {'reach': (16,), 'push': (8,)}
    jobs = iteration_jobs(config, 0, stage_horizons(config, 16))
    assert [(j.task, j.n_action_steps) for j in jobs] == [('reach', 16)] * 2 + [('push', 8)] * 2 + \
        [('reach', 16)] * 2 + [('push', 8)] * 2
    stage1 = PolicyTrimConfig(tasks=('reach', 'push'))
    assert stage_horizons(stage1, 16) == {'reach': (4, 10, 16), 'push': (4, 10, 16)}
    with pytest.raises(ValueError, match=r"task_n_action_steps\['pick'\] \(8\) must be an h >= 1 of one of the tasks"):
        PolicyTrimConfig(tasks=('reach', 'push'), task_n_action_steps={'pick': 8})
    with pytest.raises(ValueError, match='stage 2 needs n_action_steps'):   # push has no h
        PolicyTrimConfig(stage=2, tasks=('reach', 'push'), task_n_action_steps={'reach': 16},
                         step_budget={'reach': 40.0, 'push': 90.0})


def test_the_selection_plan_takes_per_task_h_and_budgets_from_the_sweep(monkeypatch):
    from policytrim_ros.execution.metrics import EpisodeMetrics
    from policytrim_ros.training import pipeline
    from policytrim_ros.training.trainer import PolicyTrimConfig

    def episodes(task, h, successes, steps):
        return [EpisodeMetrics(f'{task}-{i}', task, 'go', i < successes, steps, steps // h + 1, h, 16, h / 16, 1.0,
                               'success' if i < successes else 'max_steps') for i in range(10)]
    # baseline at h = 4: reach 8 / 10, push 8 / 10; the Stage 1 policy loses push at h = 16 only
    sweeps = {'init': {4: episodes('reach', 4, 8, 50) + episodes('push', 4, 8, 70)},
              'stage1': {4: episodes('reach', 4, 8, 50) + episodes('push', 4, 8, 70),
                         10: episodes('reach', 10, 9, 45) + episodes('push', 10, 8, 72),
                         16: episodes('reach', 16, 9, 40) + episodes('push', 16, 5, 75)}}
    monkeypatch.setattr(pipeline, 'checkpoint_chunk_size', lambda checkpoint: 16)
    monkeypatch.setattr(pipeline, '_sweep', lambda cfg, checkpoint, horizons, *rest: {
        h: sweeps[checkpoint][h] for h in horizons})
    config = PolicyTrimConfig(init='init', tasks=('reach', 'push'))
    pooled = pipeline.select_stage2(config, 'stage1', SelectionConfig(), None, None, progress=False)
    assert (pooled['n_action_steps'], pooled['task_n_action_steps']) == (10, {})   # pooled 0.7 at 16 < 0.8 - 0.02
    assert pooled['step_budget'] == {'reach': 58.5, 'push': 93.6}                 # 1.3 x the steps at h = 10
    per_task = pipeline.select_stage2(config, 'stage1', SelectionConfig(per_task=True), None, None, progress=False)
    assert per_task['task_n_action_steps'] == {'reach': 16, 'push': 10}
    assert per_task['step_budget'] == {'reach': 52.0, 'push': 93.6}               # each at its task's h
    assert per_task['selection']['per_task'] is True and per_task['below_tolerance'] == []
    # a resumed run whose rule changed re-plans from the recorded sweep, unless Stage 2 trained on the plan
    import tempfile
    from dataclasses import replace
    from pathlib import Path
    root = Path(tempfile.mkdtemp())
    assert pipeline.resumed_plan(config, pooled, root) is pooled                          # the same rule: as it is
    wide = replace(config, selection=SelectionConfig(per_task=True))
    assert pipeline.resumed_plan(wide, pooled, root)['task_n_action_steps'] == per_task['task_n_action_steps']
    strict = replace(config, selection=SelectionConfig(per_task=True, task_tolerance=0.0))
    replanned = pipeline.resumed_plan(strict, pooled, root)   # push at 10 keeps 0.8 >= 0.8; reach 0.9 at 16
    assert replanned['task_n_action_steps'] == {'reach': 16, 'push': 10} and replanned['below_tolerance'] == []
    with pytest.raises(ValueError, match='swept 10 episodes from seed 50000; the config asks 50'):
        pipeline.resumed_plan(replace(config, selection=SelectionConfig(episodes=50)),
                              {**pooled, 'selection': {**pooled['selection'], 'episodes': 10}}, root)
    (root / 'stage2').mkdir()
    with pytest.raises(ValueError, match="stage2/ trained on .*selection.json's plan"):
        pipeline.resumed_plan(wide, pooled, root)


def test_per_task_plans_name_the_tasks_no_h_kept_and_do_not_need_the_pooled_rule(monkeypatch):
    from policytrim_ros.training.pipeline import plan_stage2
    from policytrim_ros.training.trainer import PolicyTrimConfig
    row = lambda sr, steps: {'success_rate': sr, 'steps': steps}   # noqa: E731
    baseline = {'reach': row(0.9, 50.0), 'push': row(0.9, 70.0), 'all': row(0.9, 60.0)}
    by_h = {4: {'reach': row(0.9, 50.0), 'push': row(0.5, 80.0), 'all': row(0.7, 60.0)},
            16: {'reach': row(0.9, 40.0), 'push': row(0.6, 75.0), 'all': row(0.75, 55.0)}}
    config = PolicyTrimConfig(init='init', tasks=('reach', 'push'))
    with pytest.raises(ValueError, match='no h of the sweep'):                  # the pooled rule: nothing qualifies
        plan_stage2(config, SelectionConfig(), baseline, by_h)
    plan = plan_stage2(config, SelectionConfig(per_task=True), baseline, by_h)
    assert plan['task_n_action_steps'] == {'reach': 16, 'push': 16} and plan['below_tolerance'] == ['push']
    assert plan['n_action_steps'] == 4 and plan['step_budget'] == {'reach': 52.0, 'push': 97.5}


def test_step_budget_is_alpha_times_the_mean_successful_steps():
    assert step_budget([60, 80, 100]) == pytest.approx(104.0)
    assert step_budget([50], alpha=2.0) == 100.0
    with pytest.raises(ValueError, match='at least one successful episode'):
        step_budget([])


@pytest.mark.parametrize('call, message', [
    (lambda: acceptance_ratios(0, 16), r'base_n_action_steps \(0\) must be in \[1, chunk_size \(16\)\]'),
    (lambda: acceptance_horizons([1.2], 16), 'acceptance ratio 1.2 must be in'),
    (lambda: acceptance_horizons([0.01], 16), 'gives h = 0'),
    (lambda: SelectionConfig(task_tolerance=1.5), r'selection.task_tolerance \(1.5\) must be in \[0, 1\) or null'),
])
def test_bad_plans_name_the_rule(call, message):
    with pytest.raises(ValueError, match=message):
        call()
