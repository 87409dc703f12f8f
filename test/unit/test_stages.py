"""The stage plan: Gamma, horizons, group membership, the Stage 2 h and step budget."""
import pytest

from policytrim_ros.training.stages import (SelectionConfig, acceptance_horizons, acceptance_ratios, group_jobs,
                                            stage2_horizon, step_budget)


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
