import numpy as np
import pytest

from policytrim_ros.trajectory import (TimedTrajectory, TrajectoryError, sample_trajectory, validate_trajectory,
                                       window_trajectory)

NAMES = ('a', 'b')


def test_window_trajectory_times_positions_and_seam_velocity():
    chunk = np.stack([np.arange(8.0), -np.arange(8.0)], axis=1)  # moves 1 per step
    traj = window_trajectory(chunk, 3, 0.1, NAMES, start_time=5.0)
    np.testing.assert_allclose(traj.times_from_start, [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(traj.positions, chunk[:3])
    # central differences everywhere, including the last executed knot (uses chunk[3])
    np.testing.assert_allclose(traj.velocities, [[5, -5], [10, -10], [10, -10]])
    assert traj.start_time == 5.0 and traj.duration == pytest.approx(0.3)


def test_window_of_whole_chunk_ends_with_backward_difference():
    chunk = np.array([[0.0, 0], [1, 0], [3, 0]])
    traj = window_trajectory(chunk, 3, 1.0, NAMES)
    np.testing.assert_allclose(traj.velocities[:, 0], [0.5, 1.5, 2.0])


@pytest.mark.parametrize('h', [0, 9])
def test_window_rejects_h_outside_chunk(h):
    with pytest.raises(TrajectoryError, match='n_action_steps'):
        window_trajectory(np.zeros((8, 2)), h, 0.1, NAMES)


def test_sample_hits_knots_and_holds_after_the_end():
    chunk = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    traj = window_trajectory(chunk, 3, 0.1, NAMES)
    for i, t in enumerate(traj.times_from_start):
        pos, _ = sample_trajectory(traj, t - 1e-12 if i < 2 else t, np.zeros(2))
        np.testing.assert_allclose(pos, chunk[i], atol=1e-6)
    pos, vel = sample_trajectory(traj, 10.0, np.zeros(2))
    np.testing.assert_array_equal(pos, chunk[-1])
    np.testing.assert_array_equal(vel, 0.0)


def test_sample_is_continuous_and_starts_from_the_commanded_state():
    chunk = np.cumsum(np.ones((6, 2)) * 0.1, axis=0)
    traj = window_trajectory(chunk, 6, 0.1, NAMES)
    start = np.array([0.0, 0.0])
    pos0, vel0 = sample_trajectory(traj, 0.0, start, np.array([1.0, 1.0]))
    np.testing.assert_array_equal(pos0, start)
    np.testing.assert_array_equal(vel0, [1.0, 1.0])
    ts = np.linspace(0, 0.6, 601)
    samples = np.array([sample_trajectory(traj, t, start, np.array([1.0, 1.0]))[0] for t in ts])
    assert np.abs(np.diff(samples, axis=0)).max() < 0.01  # no jumps at knots


@pytest.mark.parametrize('with_velocities', [True, False])
def test_sample_at_many_times_gives_the_floats_of_one_call_each(with_velocities):
    chunk = np.array([[0.3, -1.0], [1.0, 0.5], [1.7, 0.25], [2.0, 2.0]])
    traj = window_trajectory(chunk, 4, 0.1, NAMES)
    traj = traj if with_velocities else TimedTrajectory(NAMES, traj.times_from_start, traj.positions)
    start, start_velocity = np.array([0.1, -0.2]), np.array([2.0, -3.0])
    ts = np.r_[-0.01, 0.0, np.linspace(0.001, 0.399, 97), 0.4, 0.5]   # before, inside, on and after the knots
    pos, vel = sample_trajectory(traj, ts, start, start_velocity)
    assert pos.shape == vel.shape == (len(ts), 2)
    for i, t in enumerate(ts):
        p, v = sample_trajectory(traj, float(t), start, start_velocity)
        np.testing.assert_array_equal(pos[i], p, err_msg=f't = {t}')
        np.testing.assert_array_equal(vel[i], v, err_msg=f't = {t}')
    np.testing.assert_array_equal(pos[:2], [start, start])
    np.testing.assert_array_equal(pos[-2:], [chunk[-1], chunk[-1]])
    np.testing.assert_array_equal(vel[-2:], 0.0)


def _traj(names=NAMES, times=(0.1, 0.2), positions=None, velocities=None):
    positions = np.zeros((len(times), len(names))) if positions is None else positions
    return TimedTrajectory(tuple(names), np.array(times, dtype=float), positions, velocities)


def test_validate_reorders_columns_to_controller_order():
    traj = _traj(names=('b', 'a'), positions=np.array([[1.0, 2.0], [3.0, 4.0]]))
    out = validate_trajectory(traj, NAMES)
    assert out.joint_names == NAMES
    np.testing.assert_array_equal(out.positions, [[2.0, 1.0], [4.0, 3.0]])


@pytest.mark.parametrize('traj, reason', [
    (_traj(names=('a',), positions=np.zeros((2, 1))), 'missing'),
    (_traj(names=('a', 'b', 'c'), positions=np.zeros((2, 3))), 'unknown'),
    (_traj(names=('a', 'a')), 'duplicate'),
    (_traj(times=(0.2, 0.1)), 'strictly increasing'),
    (_traj(times=(0.1, 0.1)), 'strictly increasing'),
    (_traj(times=(-0.1, 0.1)), 'strictly increasing'),
    (_traj(times=()), 'no points'),
    (_traj(positions=np.array([[np.nan, 0], [0, 0]])), 'NaN'),
    (_traj(velocities=np.zeros((2, 3))), 'velocities'),
])
def test_validate_rejects_what_jtc_rejects(traj, reason):
    with pytest.raises(TrajectoryError, match=reason):
        validate_trajectory(traj, NAMES)
