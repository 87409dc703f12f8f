"""ROS messages <-> core types. Each converter validates its input and raises ObservationError
(or TrajectoryError) with a message that says exactly what was wrong, so nodes can log it and hold."""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Pose, PoseArray
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from policytrim_ros.execution.executor import ChunkRecord
from policytrim_ros.execution.metrics import EpisodeMetrics
from policytrim_ros.msg import ChunkStats, EpisodeStats
from policytrim_ros.trajectory import TimedTrajectory, TrajectoryError


class ObservationError(ValueError):
    """A sensor message that must not reach the policy."""


def to_seconds(stamp: Time | Duration) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def to_time(seconds: float) -> Time:
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def to_duration(seconds: float) -> Duration:
    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


# -- images ----------------------------------------------------------------------------------------
def image_to_array(msg: Image, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an rgb8 (or bgr8) Image; checks encoding, size and buffer length."""
    if msg.encoding not in ('rgb8', 'bgr8'):
        raise ObservationError(f"image encoding '{msg.encoding}' is not supported; publish rgb8 (or bgr8)")
    h, w = msg.height, msg.width
    if expected_size is not None and (h, w) != tuple(expected_size):
        raise ObservationError(f'image is {w}x{h} (WxH) but the policy expects '
                               f'{expected_size[1]}x{expected_size[0]}')
    if msg.step < 3 * w or len(msg.data) != msg.step * h:
        raise ObservationError(f'image buffer has {len(msg.data)} bytes; expected step ({msg.step}) x '
                               f'height ({h}) with step >= 3 x width ({3 * w})')
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(h, msg.step)
    image = rows[:, :3 * w].reshape(h, w, 3)
    return np.ascontiguousarray(image[..., ::-1] if msg.encoding == 'bgr8' else image)


def array_to_image(image: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """An rgb8 Image from (H, W, 3) uint8."""
    h, w, _ = image.shape
    msg = Image(height=h, width=w, encoding='rgb8', is_bigendian=0, step=3 * w)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    return msg


# -- joint states ----------------------------------------------------------------------------------
def joint_state_to_arrays(msg: JointState, joint_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(positions, velocities) in ``joint_names`` order; extra joints are ignored.

    Raises ObservationError for missing or repeated joints, size mismatches or NaN/inf
    positions/velocities.
    """
    names = list(msg.name)
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ObservationError(f'joint_states names joints {repeated} more than once (got {names}): '
                               'which value is the joint\'s is ambiguous')
    if len(msg.position) != len(names):
        raise ObservationError(f'joint_states has {len(names)} names but {len(msg.position)} positions')
    missing = [n for n in joint_names if n not in names]
    if missing:
        raise ObservationError(f'joint_states is missing joints {missing} (got {names})')
    index = [names.index(n) for n in joint_names]
    positions = np.asarray(msg.position, dtype=np.float64)[index]
    if len(msg.velocity) == len(names):
        velocities = np.asarray(msg.velocity, dtype=np.float64)[index]
    else:
        velocities = np.zeros(len(joint_names))
    bad = ~(np.isfinite(positions) & np.isfinite(velocities))
    if bad.any():
        raise ObservationError(f'joint_states has NaN/inf for joints {[joint_names[i] for i in np.flatnonzero(bad)]}')
    return positions, velocities


def arrays_to_joint_state(joint_names, positions, velocities, stamp: Time) -> JointState:
    msg = JointState(name=list(joint_names), position=[float(x) for x in positions],
                     velocity=[float(x) for x in velocities])
    msg.header.stamp = stamp
    return msg


# -- privileged object poses (scripted expert only) --------------------------------------------------
def poses_to_environment_state(msg: PoseArray) -> np.ndarray:
    """(10,) [cube_pos(3), cube_quat wxyz(4), goal_pos(3)] from PoseArray [cube, goal]."""
    if len(msg.poses) != 2:
        raise ObservationError(f'object_poses must hold 2 poses [cube, goal], got {len(msg.poses)}')
    cube, goal = msg.poses
    q = cube.orientation
    state = np.array([cube.position.x, cube.position.y, cube.position.z, q.w, q.x, q.y, q.z,
                      goal.position.x, goal.position.y, goal.position.z])
    if not np.isfinite(state).all():
        raise ObservationError('object_poses has NaN/inf')
    return state


def environment_state_to_poses(state: np.ndarray, stamp: Time, frame_id: str) -> PoseArray:
    """Inverse of poses_to_environment_state."""
    msg = PoseArray()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    cube, goal = Pose(), Pose()
    cube.position.x, cube.position.y, cube.position.z = (float(v) for v in state[0:3])
    cube.orientation.w, cube.orientation.x, cube.orientation.y, cube.orientation.z = (float(v) for v in state[3:7])
    goal.position.x, goal.position.y, goal.position.z = (float(v) for v in state[7:10])
    msg.poses = [cube, goal]
    return msg


# -- trajectories ----------------------------------------------------------------------------------
def trajectory_to_msg(traj: TimedTrajectory) -> JointTrajectory:
    """One JointTrajectory; a None start_time becomes stamp 0 ("start now")."""
    msg = JointTrajectory(joint_names=list(traj.joint_names))
    msg.header.stamp = to_time(traj.start_time) if traj.start_time is not None else Time()
    for i, t in enumerate(traj.times_from_start):
        point = JointTrajectoryPoint(positions=[float(x) for x in traj.positions[i]],
                                     time_from_start=to_duration(t))
        if traj.velocities is not None:
            point.velocities = [float(x) for x in traj.velocities[i]]
        msg.points.append(point)
    return msg


def msg_to_trajectory(msg: JointTrajectory) -> TimedTrajectory:
    """A TimedTrajectory (not yet validated against the controller's joints)."""
    n = len(msg.joint_names)
    if not msg.points:
        raise TrajectoryError('trajectory has no points')
    for i, p in enumerate(msg.points):
        if len(p.positions) != n:
            raise TrajectoryError(f'point {i} has {len(p.positions)} positions for {n} joints')
        if len(p.velocities) not in (0, n):
            raise TrajectoryError(f'point {i} has {len(p.velocities)} velocities for {n} joints')
    with_vel = all(len(p.velocities) == n for p in msg.points)
    stamp = to_seconds(msg.header.stamp)
    return TimedTrajectory(
        joint_names=tuple(msg.joint_names),
        times_from_start=np.array([to_seconds(p.time_from_start) for p in msg.points]),
        positions=np.array([list(p.positions) for p in msg.points], dtype=np.float64).reshape(-1, n),
        velocities=np.array([list(p.velocities) for p in msg.points], dtype=np.float64) if with_vel else None,
        start_time=stamp if stamp > 0 else None)


# -- stats -----------------------------------------------------------------------------------------
def episode_stats_msg(m: EpisodeMetrics, stamp: Time) -> EpisodeStats:
    msg = EpisodeStats(episode_id=m.episode_id, task=m.task, instruction=m.instruction, success=m.success,
                       steps=m.steps, inference_calls=m.inference_calls, n_action_steps=m.n_action_steps,
                       chunk_size=m.chunk_size, chunk_utilization=float(m.chunk_utilization),
                       wall_clock_s=float(m.wall_clock_s), end_reason=m.end_reason,
                       weights_version=m.weights_version, sampling_seed=m.sampling_seed)
    msg.header.stamp = stamp
    return msg


def episode_stats_from_msg(msg: EpisodeStats) -> EpisodeMetrics:
    return EpisodeMetrics(episode_id=msg.episode_id, task=msg.task, instruction=msg.instruction,
                          success=msg.success, steps=msg.steps, inference_calls=msg.inference_calls,
                          n_action_steps=msg.n_action_steps, chunk_size=msg.chunk_size,
                          chunk_utilization=msg.chunk_utilization, wall_clock_s=msg.wall_clock_s,
                          end_reason=msg.end_reason, weights_version=msg.weights_version,
                          sampling_seed=msg.sampling_seed)


def chunk_stats_msg(r: ChunkRecord, stamp: Time) -> ChunkStats:
    msg = ChunkStats(episode_id=r.episode_id, call_index=r.call_index, chunk_size=r.chunk_size,
                     n_action_steps=r.n_action_steps, first_step=r.first_step, last_step=r.last_step,
                     inference_latency_s=r.inference_latency_s, weights_version=r.weights_version,
                     sampling_seed=r.sampling_seed)
    msg.header.stamp = stamp
    return msg
