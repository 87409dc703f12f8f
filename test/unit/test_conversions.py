"""Message conversions reject bad sensor data with a reason (what policy_node logs before holding)."""
import numpy as np
import pytest
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from policytrim_ros.nodes import conversions as conv
from policytrim_ros.trajectory import TrajectoryError, window_trajectory

NAMES = ('a', 'b', 'c')


def image(h=4, w=5, encoding='rgb8', step=None, data=None):
    step = 3 * w if step is None else step
    data = bytes(range(256)) * 10 if data is None else data
    return Image(height=h, width=w, encoding=encoding, step=step, data=data[:step * h])


def test_rgb8_round_trip_and_bgr8_is_converted():
    rgb = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    msg = conv.array_to_image(rgb, conv.to_time(1.5), 'cam')
    np.testing.assert_array_equal(conv.image_to_array(msg, (4, 5)), rgb)
    msg.encoding = 'bgr8'
    np.testing.assert_array_equal(conv.image_to_array(msg), rgb[..., ::-1])


def test_padded_rows_are_handled():
    msg = image(step=16)
    assert conv.image_to_array(msg).shape == (4, 5, 3)


@pytest.mark.parametrize('msg, expected, reason', [
    (image(encoding='mono8'), None, "encoding 'mono8' is not supported"),
    (image(encoding='rgba8'), None, "encoding 'rgba8'"),
    (image(h=4, w=5), (96, 96), 'image is 5x4 .* expects 96x96'),
    (image(data=b'\x00' * 10), None, 'image buffer has 10 bytes'),
])
def test_bad_images_are_rejected_with_the_reason(msg, expected, reason):
    with pytest.raises(conv.ObservationError, match=reason):
        conv.image_to_array(msg, expected)


def test_joint_state_is_reordered_and_extra_joints_ignored():
    msg = JointState(name=['c', 'x', 'a', 'b'], position=[3.0, 9.0, 1.0, 2.0], velocity=[0.3, 0, 0.1, 0.2])
    pos, vel = conv.joint_state_to_arrays(msg, NAMES)
    np.testing.assert_array_equal(pos, [1, 2, 3])
    np.testing.assert_array_equal(vel, [0.1, 0.2, 0.3])


@pytest.mark.parametrize('msg, reason', [
    (JointState(name=['a', 'b'], position=[0.0, 0.0]), r"missing joints \['c'\]"),
    (JointState(name=['a', 'b', 'c'], position=[0.0, float('nan'), 0.0]), r"NaN/inf for joints \['b'\]"),
    (JointState(name=['a', 'b', 'c'], position=[0.0, 0.0, 0.0], velocity=[0.0, float('inf'), 0.0]), 'NaN/inf'),
    (JointState(name=['a', 'b', 'c'], position=[0.0]), '3 names but 1 positions'),
])
def test_bad_joint_states_are_rejected_with_the_reason(msg, reason):
    with pytest.raises(conv.ObservationError, match=reason):
        conv.joint_state_to_arrays(msg, NAMES)


def test_trajectory_message_round_trip_keeps_timing_and_stamp():
    traj = window_trajectory(np.arange(12.0).reshape(4, 3), 3, 0.1, NAMES, start_time=12.25)
    back = conv.msg_to_trajectory(conv.trajectory_to_msg(traj))
    assert back.joint_names == NAMES and back.start_time == pytest.approx(12.25)
    np.testing.assert_allclose(back.times_from_start, traj.times_from_start)
    np.testing.assert_allclose(back.positions, traj.positions)
    np.testing.assert_allclose(back.velocities, traj.velocities)
    unstamped = conv.trajectory_to_msg(window_trajectory(np.zeros((4, 3)), 2, 0.1, NAMES))
    assert conv.msg_to_trajectory(unstamped).start_time is None  # stamp 0 = start now


def test_ragged_trajectory_points_are_rejected():
    msg = JointTrajectory(joint_names=list(NAMES), points=[JointTrajectoryPoint(positions=[0.0, 0.0])])
    with pytest.raises(TrajectoryError, match='point 0 has 2 positions for 3 joints'):
        conv.msg_to_trajectory(msg)


def test_environment_state_round_trips_through_poses():
    state = np.array([0.4, 0.1, 0.02, 1.0, 0.0, 0.0, 0.0, 0.5, -0.1, 0.0])
    back = conv.poses_to_environment_state(conv.environment_state_to_poses(state, conv.to_time(0.0), 'world'))
    np.testing.assert_allclose(back, state)
