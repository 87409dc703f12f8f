"""Async inference: stale actions skipped, the new window taking over where the running one ends,
stitched without a jump, and the step and call counts of the synchronous loop."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from policytrim_ros.envs.arm import ArmEnv
from policytrim_ros.evaluation.seams import seam_jumps
from policytrim_ros.execution import jtc
from policytrim_ros.execution.config import ExecutionConfig
from policytrim_ros.execution.episode import run_episode
from policytrim_ros.execution.executor import ChunkExecutor
from policytrim_ros.execution.stitching import LEAD_MARGIN_STEPS, StaleChunkError, blend_weights
from policytrim_ros.policy.arm_expert import ScriptedExpertPolicy
from policytrim_ros.trajectory import sample_trajectory, window_trajectory

JOINTS = ('a', 'b')
H, h, DT = 16, 8, 0.1


def executor(blend=0, **kw):
    ex = ChunkExecutor(ExecutionConfig(chunk_size=H, n_action_steps=h, control_dt=DT, async_inference=True,
                                       async_blend_steps=blend, **kw), JOINTS)
    ex.start('ep', 'reach', 'go', 0.0)
    return ex


def ramp(start_step, speed=(0.1, -0.05), offset=0.0):
    """(H, 2) targets of a constant-velocity plan observed after ``start_step`` steps: row i for step start_step + i + 1."""
    steps = np.arange(start_step + 1, start_step + H + 1)[:, None]
    return steps * DT * np.asarray(speed) + offset


def sample_abs(traj, t, start_pos, start_vel=None):
    return sample_trajectory(traj, t - traj.start_time, start_pos, start_vel)


def test_stale_actions_are_skipped_and_the_new_window_takes_over_where_the_old_one_ends():
    ex = executor()
    first, _ = ex.dispatch_async(ramp(0), 0, 0.0, np.zeros(2), 0.0)
    assert first.start_time == 0.0 and ex.window.end_time == pytest.approx(0.8)
    # observed after 4 steps (t = 0.4), back 0.3 s later: its rows 0-3 are for steps 5-8, which the old window runs
    second, record = ex.dispatch_async(ramp(4), 4, 0.7, None, 0.3)
    assert record.stale_steps == 4 and (record.first_step, record.last_step) == (8, 15)
    assert ex.window.start_time == pytest.approx(0.8) and ex.window.n_steps == h
    # stamped at the old window's knot at 0.7, repeating its knot at 0.8, then rows 4.. of the new chunk
    assert second.start_time == pytest.approx(0.7)
    np.testing.assert_allclose(second.start_time + second.times_from_start, 0.7 + DT * np.arange(1, h + 2))
    np.testing.assert_allclose(second.positions[0], first.positions[-1])
    np.testing.assert_allclose(second.positions[1:], ramp(4)[4:4 + h])
    assert ex.steps == 8 and ex.inference_calls == 2


def test_the_stitched_message_is_the_running_trajectory_until_the_takeover():
    ex = executor()
    first, _ = ex.dispatch_async(ramp(0), 0, 0.0, np.zeros(2), 0.0)
    second, _ = ex.dispatch_async(ramp(4, offset=0.03), 4, 0.7, None, 0.3)   # a plan that disagrees
    p0, v0 = sample_abs(first, 0.7, np.zeros(2))
    for t in np.linspace(0.7, 0.8, 11):
        np.testing.assert_allclose(sample_abs(second, t, p0, v0)[0], sample_abs(first, t, np.zeros(2))[0], atol=1e-9)


def test_a_chunk_back_after_the_window_ended_starts_at_once_from_where_the_arm_holds():
    ex = executor()
    first, _ = ex.dispatch_async(ramp(0), 0, 0.0, np.zeros(2), 0.0)
    traj, record = ex.dispatch_async(ramp(5), 5, 1.0, None, 0.5)   # 0.2 s after the window's end
    assert record.stale_steps == 3 and traj.start_time == pytest.approx(1.0)
    assert ex.window.start_time == pytest.approx(1.0)
    np.testing.assert_allclose(traj.positions, ramp(5)[3:3 + h])   # no prefix: the old window has ended


@pytest.mark.parametrize('blend', [0, 3])
def test_blending_hands_over_from_the_old_plan_without_a_jump(blend):
    ex = executor(blend=blend)
    ex.dispatch_async(ramp(0), 0, 0.0, np.zeros(2), 0.0)
    offset = 0.04
    traj, _ = ex.dispatch_async(ramp(4, offset=offset), 4, 0.7, None, 0.3)
    old_plan = ramp(0)[8:8 + h]   # the first chunk's own targets for steps 9..16
    gap = np.abs(traj.positions[1:] - old_plan).max(axis=1)
    expected = offset * (1 - blend_weights(blend, h))
    np.testing.assert_allclose(gap, expected, atol=1e-9)
    assert gap[0] <= offset / (blend + 1) + 1e-9


def test_seam_jumps_of_stitched_windows_are_small_and_of_late_past_stamped_windows_large():
    """Replay through the JTC-semantics follower: a sync window stamped at its observation but arriving
    0.3 s later skips its due points (a jump); the async stitched one does not."""
    plan = ramp(0, speed=(0.5, -0.3))
    first = window_trajectory(plan, h, DT, JOINTS, start_time=0.0)
    late = window_trajectory(ramp(8, speed=(0.5, -0.3)), h, DT, JOINTS, start_time=0.8)
    sync = seam_jumps([(0.0, first), (1.1, late)])
    ex = executor(blend=3)
    a, _ = ex.dispatch_async(plan, 0, 0.0, np.zeros(2), 0.0)
    b, _ = ex.dispatch_async(ramp(4, speed=(0.5, -0.3)), 4, 0.7, None, 0.3)
    stitched = seam_jumps([(0.0, a), (0.7, b)])
    assert stitched.position < 0.5 * 0.002 * 1.5      # no more than the motion between two samples
    assert stitched.velocity < 0.05
    assert sync.position > 0.1 and sync.velocity > 0.4   # 3 skipped steps at 0.5 rad/s; a stop and a jump


def test_episode_end_before_the_takeover_uncounts_the_queued_call_and_the_steps_that_did_not_run():
    ex = executor()
    ex.dispatch_async(ramp(0), 0, 0.0, np.zeros(2), 0.0)
    ex.dispatch_async(ramp(4), 4, 0.7, None, 0.3)
    ex.end_window_at(0.7)   # success on step 7, stamped when the chunk was sent (takeover at 0.8)
    m = ex.finish(True, 'success', 1.0)
    assert (m.steps, m.inference_calls) == (7, 1)


def test_all_stale_chunk_is_refused_and_changes_nothing():
    ex = executor()
    ex.dispatch_async(ramp(0), 0, 0.0, np.zeros(2), 0.0)
    ex.dispatch_async(ramp(0), 0, 0.75, None, 0.7)   # 8 stale of 16: fine
    with pytest.raises(StaleChunkError):
        ex.dispatch_async(ramp(0), 0, 1.55, None, 1.5)   # 16 steps ran since its observation
    assert ex.inference_calls == 2 and ex.steps == 8 and ex.window.n_steps == h


def test_async_needs_a_horizon_that_runs_whole_windows():
    with pytest.raises(ValueError, match='async_inference'):
        ExecutionConfig(chunk_size=H, n_action_steps=4, async_inference=True, horizon='divergence',
                        replan_threshold=(0.1, 0.1))
    with pytest.raises(ValueError, match='async_blend_steps'):
        ExecutionConfig(chunk_size=H, n_action_steps=4, async_inference=True, async_blend_steps=H + 1)
    with pytest.raises(ValueError, match='async_blend_steps'):
        ExecutionConfig(chunk_size=H, n_action_steps=4, async_blend_steps=-1)
    ExecutionConfig(chunk_size=1, n_action_steps=1)   # the default blend does not bind a sync run's H


def _msg(traj):
    sec = lambda t: SimpleNamespace(sec=int(t), nanosec=int(round((t - int(t)) * 1e9)))  # noqa: E731
    points = [SimpleNamespace(positions=list(p), velocities=list(v), accelerations=[], effort=[],
                              time_from_start=sec(t))
              for t, p, v in zip(traj.times_from_start, traj.positions, traj.velocities)]
    return SimpleNamespace(joint_names=list(traj.joint_names), points=points,
                           header=SimpleNamespace(stamp=sec(traj.start_time)))


@pytest.mark.parametrize('window_end, distros', [('moving', ['humble']), ('rest', list(jtc.DISTROS))])
def test_stitched_messages_pass_each_distros_controller_rules(window_end, distros):
    ex = ChunkExecutor(ExecutionConfig(chunk_size=H, n_action_steps=h, control_dt=DT, async_inference=True),
                       JOINTS, window_end=window_end)
    ex.start('ep', 'reach', 'go', 10.0)
    msgs = [ex.dispatch_async(ramp(0), 0, 10.0, np.zeros(2), 0.0)[0],
            ex.dispatch_async(ramp(4), 4, 10.7, None, 0.3)[0]]
    for distro in distros:
        rules = jtc.ControllerRules.for_distro(distro, JOINTS)
        assert [jtc.rejection(_msg(m), rules, now=10.75) for m in msgs] == [None, None]


@pytest.mark.parametrize('latency_steps', [0, 3, 9])
def test_core_loop_async_counts_steps_and_calls_like_sync(latency_steps):
    env, expert = ArmEnv(), ScriptedExpertPolicy(32, DT)
    config = ExecutionConfig(chunk_size=32, n_action_steps=h, control_dt=DT, max_episode_steps=150,
                             async_inference=True)
    for task in ('reach', 'pick_place'):
        metrics, records = run_episode(env, expert, config, task, 1000, latency_steps=latency_steps)
        assert metrics.success, metrics
        assert metrics.inference_calls == len(records) == math.ceil(metrics.steps / h)
        assert sum(r.n_action_steps for r in records[:-1]) + 1 <= metrics.steps
        # every call after the first planned latency + margin steps before its window (all of a window if shorter)
        lead = min(latency_steps + LEAD_MARGIN_STEPS, h)
        assert [r.stale_steps for r in records] == [0] + [lead] * (len(records) - 1)
        assert [r.first_step for r in records] == [h * k for k in range(len(records))]
    with pytest.raises(ValueError, match='latency_steps'):
        run_episode(env, expert, ExecutionConfig(chunk_size=32, n_action_steps=h), 'reach', 1000, latency_steps=2)
