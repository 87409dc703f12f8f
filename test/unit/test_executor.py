import math

import numpy as np
import pytest

from policytrim_ros.execution.config import ExecutionConfig, SafetyConfig
from policytrim_ros.execution.executor import ChunkExecutor, NoEpisodeError
from policytrim_ros.execution.safety import UnsafeChunkError

NAMES = ('a', 'b')


def make(h=4, H=8, max_steps=20, safety=None):
    ex = ChunkExecutor(ExecutionConfig(chunk_size=H, n_action_steps=h, control_dt=0.1,
                                       max_episode_steps=max_steps), NAMES, safety)
    ex.start('ep', 'task', 'do it', wall_time=100.0)
    return ex


def chunk(H=8):
    return np.linspace(0, 0.1, H)[:, None].repeat(2, axis=1)


def run_until_out_of_steps(ex, H=8):
    t = 0.0
    while not ex.out_of_steps:
        traj, rec = ex.dispatch(chunk(H), t, None, 0.01)
        ex.complete_window()
        t += len(traj) * 0.1
    return ex.finish(False, 'max_steps', wall_time=101.5)


@pytest.mark.parametrize('h, max_steps, calls', [(4, 20, 5), (8, 20, 3), (1, 7, 7), (3, 10, 4)])
def test_calls_are_ceil_of_steps_over_h_and_steps_never_exceed_the_limit(h, max_steps, calls):
    m = run_until_out_of_steps(make(h=h, max_steps=max_steps))
    assert m.steps == max_steps
    assert m.inference_calls == calls == math.ceil(max_steps / h)
    assert m.chunk_utilization == h / 8 and m.n_action_steps == h and m.chunk_size == 8
    assert m.wall_clock_s == pytest.approx(1.5)


def test_dispatch_builds_one_window_and_records_the_steps_it_covers():
    ex = make(h=4)
    traj, rec = ex.dispatch(chunk(), 2.0, None, 0.05)
    assert len(traj) == 4 and traj.start_time == 2.0
    assert (rec.call_index, rec.first_step, rec.last_step, rec.n_action_steps) == (0, 0, 3, 4)
    assert ex.window.end_time == pytest.approx(2.4)
    with pytest.raises(RuntimeError, match='in flight'):
        ex.dispatch(chunk(), 2.0, None, 0.05)
    ex.complete_window()
    _, rec = ex.dispatch(chunk(), 2.4, None, 0.05)
    assert (rec.call_index, rec.first_step, rec.last_step) == (1, 4, 7)


def test_success_mid_window_counts_only_the_executed_steps():
    ex = make(h=4)
    ex.dispatch(chunk(), 1.0, None, 0.0)
    ex.end_window_at(1.2)          # 2 of 4 steps ran
    m = ex.finish(True, 'success', 100.0)
    assert (m.steps, m.inference_calls, m.success) == (2, 1, True)


def test_a_call_planned_after_the_success_moment_is_not_counted():
    ex = make(h=4)
    ex.dispatch(chunk(), 1.0, None, 0.0)
    ex.complete_window()                  # observation at 1.4 arrived before the success event
    ex.dispatch(chunk(), 1.4, None, 0.0)  # ... and a new call was made from it
    ex.end_window_at(1.4)                 # the success happened at the last step of window 1
    m = ex.finish(True, 'success', 100.0)
    assert (m.steps, m.inference_calls) == (4, 1)


@pytest.mark.parametrize('bad, reason', [
    (np.full((8, 2), np.nan), 'NaN'),
    (np.zeros((7, 2)), 'shape'),
    (np.zeros((8, 3)), 'shape'),
])
def test_bad_chunks_are_rejected_and_not_counted(bad, reason):
    ex = make()
    with pytest.raises(UnsafeChunkError, match=reason):
        ex.dispatch(bad, 0.0, None, 0.0)
    assert ex.inference_calls == 0 and ex.window is None


def test_safety_limits_reject_out_of_range_and_too_fast_chunks():
    safety = SafetyConfig(position_lower=(-1.0, -1.0), position_upper=(1.0, 1.0), max_velocity=(1.0, 1.0))
    ex = make(safety=safety)
    far = np.zeros((8, 2))
    far[3, 1] = 2.0
    with pytest.raises(UnsafeChunkError, match=r'joint b at step 3 is outside \[-1.0000, 1.0000\] by more than'):
        ex.dispatch(far, 0.0, np.zeros(2), 0.0)
    with pytest.raises(UnsafeChunkError, match=r'joint a would move at 5.000/s at step 0'):
        ex.dispatch(np.full((8, 2), 0.5), 0.0, np.zeros(2), 0.0)
    ex.dispatch(np.full((8, 2), 0.05), 0.0, np.zeros(2), 0.0)


def test_only_the_steps_that_shape_the_window_are_limit_checked():
    safety = SafetyConfig(position_lower=(-1.0, -1.0), position_upper=(1.0, 1.0), max_velocity=(1.0, 1.0))
    tail = np.zeros((8, 2))
    tail[5:, 0] = 3.0                  # never sent at h = 4: knots 0-3 plus knot 4 for the last velocity
    traj, _ = make(h=4, safety=safety).dispatch(tail, 0.0, np.zeros(2), 0.0)
    np.testing.assert_array_equal(traj.positions, np.zeros((4, 2)))
    np.testing.assert_array_equal(traj.velocities, np.zeros((4, 2)))
    with pytest.raises(UnsafeChunkError, match='joint a at step 5 is outside'):
        make(h=5, safety=safety).dispatch(tail, 0.0, np.zeros(2), 0.0)
    with pytest.raises(UnsafeChunkError, match='joint a at step 4 is outside'):
        tail[4, 0] = 3.0               # shapes the last knot's velocity: checked
        make(h=4, safety=safety).dispatch(tail, 0.0, np.zeros(2), 0.0)
    tail[7, 1] = np.nan                # a broken model: rejected wherever the NaN is
    with pytest.raises(UnsafeChunkError, match='NaN/inf at step 7, joint b'):
        make(h=4, safety=safety).dispatch(tail, 0.0, np.zeros(2), 0.0)


def test_operations_without_an_episode_raise():
    ex = ChunkExecutor(ExecutionConfig(), NAMES)
    with pytest.raises(NoEpisodeError):
        ex.dispatch(chunk(16), 0.0, None, 0.0)


@pytest.mark.parametrize('kwargs, message', [
    ({'chunk_size': 16, 'n_action_steps': 24}, r'n_action_steps \(24\) must be in \[1, chunk_size \(16\)\]'),
    ({'control_dt': 0.0}, r'control_dt \(0.0\) must be > 0'),
    ({'max_episode_steps': 0}, 'max_episode_steps'),
])
def test_execution_config_names_the_broken_rule(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExecutionConfig(**kwargs)


def test_targets_within_the_margin_are_clipped_onto_the_limit():
    safety = SafetyConfig(position_lower=(0.0, 0.0), position_upper=(0.04, 1.0), position_margin=(0.001, 0.0))
    ex = make(safety=safety)
    chunk = np.full((8, 2), 0.02)
    chunk[2, 0] = 0.0405
    traj, _ = ex.dispatch(chunk, 0.0, None, 0.0)
    assert traj.positions[2, 0] == 0.04
    chunk[2, 0] = 0.0420
    ex.complete_window()
    with pytest.raises(UnsafeChunkError, match='by more than its margin 0.0010'):
        ex.dispatch(chunk, 0.4, None, 0.0)
