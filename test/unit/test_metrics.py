import json
import math

import pytest

from policytrim_ros.execution.metrics import (EPISODE_COLUMNS, EpisodeMetrics, JsonlLog, format_table, read_jsonl,
                                              speedup, summarize, summarize_by_task, write_json)


def ep(task='reach', success=True, steps=40, calls=10, h=4, wall=1.0):
    return EpisodeMetrics(episode_id=f'{task}-{steps}', task=task, instruction='x', success=success, steps=steps,
                          inference_calls=calls, n_action_steps=h, chunk_size=16, chunk_utilization=h / 16,
                          wall_clock_s=wall, end_reason='success' if success else 'max_steps')


def test_steps_and_calls_average_successful_episodes_only():
    s = summarize([ep(steps=40, calls=10), ep(steps=60, calls=15), ep(success=False, steps=150, calls=38)])
    assert s['success_rate'] == pytest.approx(2 / 3)
    assert s['steps'] == 50 and s['inference_calls'] == 12.5
    assert s['chunk_utilization'] == 0.25 and s['episodes'] == 3


def test_summary_of_all_failures_has_undefined_steps():
    s = summarize([ep(success=False)])
    assert s['success_rate'] == 0 and math.isnan(s['steps']) and math.isnan(s['inference_calls'])


def test_by_task_keeps_task_order_and_adds_all():
    out = summarize_by_task([ep('push'), ep('reach'), ep('push', steps=80)])
    assert list(out) == ['push', 'reach', 'all']
    assert out['push']['steps'] == 60 and out['all']['episodes'] == 3


def test_speedup_is_baseline_calls_over_method_calls():
    assert speedup(12.0, 3.0) == 4.0
    assert math.isnan(speedup(12.0, 0.0)) and math.isnan(speedup(float('nan'), 3.0))


def test_jsonl_round_trip_and_strict_json(tmp_path):
    log = JsonlLog(tmp_path / 'a' / 'episodes.jsonl')
    episodes = [ep(), ep('push', success=False)]
    for e in episodes:
        log.append(e)
    assert read_jsonl(log.path) == episodes
    write_json(tmp_path / 's.json', summarize([ep(success=False)]))
    assert json.loads((tmp_path / 's.json').read_text())['steps'] is None


def test_table_has_metric_headers():
    table = format_table([ep().to_dict()], EPISODE_COLUMNS)
    assert 'inference calls' in table and 'steps S' in table and 'h/H' in table


def test_unknown_end_reason_is_rejected():
    with pytest.raises(ValueError, match='end_reason'):
        EpisodeMetrics('e', 't', 'i', True, 1, 1, 1, 1, 1.0, 0.0, 'exploded')
