"""Sweep reports: the failure-mode table and the per-episode logs with end states."""
import json

from policytrim_ros.evaluation.report import failure_rows, sweep_rows, write_episodes, write_report
from policytrim_ros.execution.metrics import EpisodeMetrics


def ep(task, success, k, h=4):
    return EpisodeMetrics(episode_id=f'{task}-{k:03d}', task=task, instruction='x', success=success,
                          steps=40 if success else 150, inference_calls=10 if success else 38, n_action_steps=h,
                          chunk_size=16, chunk_utilization=h / 16, wall_clock_s=1.0,
                          end_reason='success' if success else 'max_steps')


RESULTS = {
    4: [(ep('push', True, 0), {'goal_distance': 0.02}),
        (ep('push', False, 1), {'goal_distance': 0.1, 'failure_mode': 'off_target'}),
        (ep('pick_place', False, 0), {'failure_mode': 'never_grasped'}),
        (ep('pick_place', False, 1), {'failure_mode': 'holding_on_target'}),
        (ep('pick_place', False, 2), {'failure_mode': 'holding_on_target'})],
    16: [(ep('push', True, 0, 16), {}), (ep('push', True, 1, 16), {}),
         (ep('pick_place', True, 0, 16), {}), (ep('pick_place', False, 1, 16), {}),
         (ep('pick_place', True, 2, 16), {})],
}


def test_failure_rows_count_modes_per_task_and_h_most_frequent_first():
    rows = failure_rows(RESULTS)
    assert [(r['task'], r['n_action_steps'], r['failed']) for r in rows] == [
        ('push', 4, 1), ('push', 16, 0), ('pick_place', 4, 3), ('pick_place', 16, 1)]
    assert list(rows[2]['failure_modes'].items()) == [('holding_on_target', 2), ('never_grasped', 1)]
    assert rows[3]['failure_modes'] == {'unknown': 1}   # an env that records no end state


def test_report_and_episode_logs_carry_the_end_states(tmp_path):
    metrics = {h: [m for m, _ in episodes] for h, episodes in RESULTS.items()}
    write_episodes(RESULTS, tmp_path)
    paths = write_report(sweep_rows(metrics, 4), tmp_path, 'title', {}, failure_rows(RESULTS))
    lines = [json.loads(line) for line in (tmp_path / 'h4' / 'episodes.jsonl').read_text().splitlines()]
    assert [(d['episode_id'], d['end_state'].get('failure_mode')) for d in lines][1:3] == [
        ('push-001', 'off_target'), ('pick_place-000', 'never_grasped')]
    assert '| pick_place | 4  | 3      | holding_on_target 2, never_grasped 1 |' in paths['markdown'].read_text()
    assert json.loads(paths['json'].read_text())['failures'][0]['failure_modes'] == {'off_target': 1}


def test_episode_logs_with_end_states_read_back_as_episodes(tmp_path):
    from policytrim_ros.execution.metrics import read_jsonl
    write_episodes(RESULTS, tmp_path)
    assert read_jsonl(tmp_path / 'h4' / 'episodes.jsonl') == [m for m, _ in RESULTS[4]]
    write_episodes(RESULTS, tmp_path)   # a rerun into the same folder replaces the log
    assert len(read_jsonl(tmp_path / 'h4' / 'episodes.jsonl')) == len(RESULTS[4])
