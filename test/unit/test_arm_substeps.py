"""The arm's control step computes its physics substeps' targets in one numpy pass: the same floats,
bit for bit, as the per-substep formula it replaced (kept here, and only here, as the reference)."""
from dataclasses import replace

import mujoco
import numpy as np
import pytest

from policytrim_ros.envs.follower import TrajectoryFollower
from policytrim_ros.policy.arm_expert import ScriptedExpert
from policytrim_ros.robots.arm import ARM_JOINT_NAMES, JOINT_NAMES
from policytrim_ros.trajectory import TimedTrajectory, window_trajectory

H = 5
START_OFFSETS = (None, 0.037, -0.013, 0.25)
"""Start times of successive windows after "now" (s): on arrival, deferred to between two substeps
(the running command continues until then), in the past (the window ends inside a control step),
deferred past a whole control step (the last knot is held meanwhile)."""


# ----------------------------------------------------------------- the reference (the code at 5a82413)
def reference_sample(traj, t, start_position, start_velocity=None):
    """``trajectory.sample_trajectory`` as it was: one time t (s) -> (A,) position, (A,) velocity."""
    times = traj.times_from_start
    p0 = np.asarray(start_position, dtype=np.float64)
    v0 = np.zeros_like(p0) if start_velocity is None else np.asarray(start_velocity, dtype=np.float64)
    if t >= times[-1]:
        return traj.positions[-1].copy(), np.zeros_like(p0)
    if t <= 0.0:
        return p0.copy(), v0.copy()
    k = int(np.searchsorted(times, t, side='right'))
    if k == 0:
        ta, pa, va = 0.0, p0, v0
    else:
        ta, pa = times[k - 1], traj.positions[k - 1]
        va = traj.velocities[k - 1] if traj.velocities is not None else None
    tb, pb = times[k], traj.positions[k]
    vb = traj.velocities[k] if traj.velocities is not None else None
    span = tb - ta
    s = (t - ta) / span
    if vb is None or va is None:
        return pa + s * (pb - pa), (pb - pa) / span
    h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
    pos = h00 * pa + h10 * span * va + h01 * pb + h11 * span * vb
    d00, d10, d01, d11 = 6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1, -6 * s**2 + 6 * s, 3 * s**2 - 2 * s
    vel = (d00 * pa + d10 * span * va + d01 * pb + d11 * span * vb) / span
    return pos, vel


def reference_update(follower: TrajectoryFollower, t: float) -> None:
    """``TrajectoryFollower.update`` as it was: sample the trajectory at time t into the commanded state."""
    if follower._pending is not None and t >= follower._pending[1] - follower.time_tolerance:
        follower._activate(*follower._pending, now=t)
        follower._pending = None
    active = follower._active
    if active is None:
        return
    elapsed = t - active.start
    if elapsed >= active.trajectory.duration - follower.time_tolerance:
        follower.position = active.trajectory.positions[-1].copy()
        follower.velocity = np.zeros(len(follower.joint_names))
        follower._active = None
        return
    follower.position, follower.velocity = reference_sample(
        active.trajectory, elapsed, active.start_position, active.start_velocity)


def reference_step(env) -> bool:
    """``ArmEnv.step`` as it was: sample, add noise, clip and feed forward once per physics substep."""
    env._require_reset('step')
    d = env.config.disturbances
    c = d.actuation_noise_correlation
    env._noise = c * env._noise + np.sqrt(1.0 - c * c) * d.actuation_noise_std * \
        env._rng['actuation'].standard_normal(len(ARM_JOINT_NAMES))
    env._maybe_kick_cube()
    for _ in range(env.config.substeps):
        reference_update(env._follower, env.data.time)
        target = env._follower.position.copy()
        target[:len(ARM_JOINT_NAMES)] += env._noise
        target = np.clip(target, env._lower, env._upper)
        env.data.ctrl[env._actuators] = target + env._velocity_feedforward * env._follower.velocity
        mujoco.mj_step(env.model, env.data)
    mujoco.mj_forward(env.model, env.data)
    env.step_count += 1
    env.cube_was_grasped = env.cube_was_grasped or env.cube_grasped
    env.cube_max_lift = max(env.cube_max_lift, env.cube_lift)
    return env.task.is_success(env)


# ----------------------------------------------------------------- the episodes
def snapshot(env, solved: bool) -> dict:
    """Everything a control step leaves behind, copied."""
    return {'qpos': env.data.qpos.copy(), 'qvel': env.data.qvel.copy(), 'ctrl': env.data.ctrl.copy(),
            'time': env.data.time, 'commanded': env.commanded_position,
            'commanded_velocity': env._follower.velocity.copy(), 'active': env.trajectory_active,
            'solved': solved, 'grasped': env.cube_was_grasped, 'lift': env.cube_max_lift}


def observed(obs) -> dict:
    return {'joint_positions': obs.joint_positions, 'joint_velocities': obs.joint_velocities,
            'environment_state': obs.environment_state, 'obs_time': obs.time, 'step': obs.step}


def expert_episode(env, step, expert, task: str, seed: int, window_end: str, steps: int = 30) -> list[dict]:
    """The expert in closed loop with windows of H (ending ``window_end``) replanned after H, H - 1 or
    H - 2 steps (takeover mid-window), start times cycling through START_OFFSETS, every fifth window
    without velocities (linear), every seventh a hold instead."""
    obs = env.reset(task, seed, render=False)
    records = [observed(obs)]
    k = 0
    while env.step_count < steps:
        if k % 7 == 6:
            env.hold()
        else:
            chunk = expert.chunk(task, obs.joint_positions, obs.environment_state, 16, env.control_dt)
            offset = START_OFFSETS[k % len(START_OFFSETS)]
            traj = window_trajectory(chunk, H, env.control_dt, env.joint_names, window_end=window_end,
                                     start_time=None if offset is None else env.time + offset)
            env.set_trajectory(replace(traj, velocities=None) if k % 5 == 4 else traj)
        for _ in range(H - k % 3):
            records.append(snapshot(env, step()))
        obs = env.observe(render=False)
        records.append(observed(obs))
        k += 1
    return records


def fixed_episode(env, step) -> list[dict]:
    """Fixed trajectories on push: knots beyond the joint ranges (clipped targets), then a deferred
    start during a running trajectory and trajectories that end inside a control step."""
    obs = env.reset('push', 11, render=False)
    home = env.commanded_position
    beyond = home + np.r_[0.0, 4.0, -4.0, 0.0, 0.0, 0.0, -0.1]   # past joint2's, joint3's, the gripper's limits
    assert (beyond > env._upper).any() and (beyond < env._lower).any()
    commands = [  # (trajectory, its start after now in s or None, control steps run)
        (TimedTrajectory(JOINT_NAMES, np.array([0.23, 0.61]), np.stack([beyond, home]),
                         np.stack([np.full(7, 0.5), np.zeros(7)])), None, 3),
        (TimedTrajectory(JOINT_NAMES, np.array([0.17]), home[None] + 0.2), 0.0512, 4),
        (TimedTrajectory(JOINT_NAMES, np.array([0.05, 0.1, 0.31]), home + np.outer([0.1, 0.3, 0.0], np.ones(7))),
         None, 5),
    ]
    records = [observed(obs)]
    for traj, offset, n_steps in commands:
        env.set_trajectory(replace(traj, start_time=None if offset is None else env.time + offset))
        for _ in range(n_steps):
            records.append(snapshot(env, step()))
        records.append(observed(env.observe(render=False)))
    return records


def assert_same(new: list[dict], reference: list[dict]) -> None:
    assert len(new) == len(reference)
    for i, (a, b) in enumerate(zip(new, reference)):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f'record {i}: {key}')


@pytest.fixture(scope='module')
def expert():
    return ScriptedExpert()


@pytest.mark.parametrize('window_end', ['moving', 'rest'])
@pytest.mark.parametrize('task', ['reach', 'push', 'pick_place'])
def test_arm_step_replays_the_per_substep_formula_bit_for_bit(env, expert, task, window_end):
    new = expert_episode(env, env.step, expert, task, 7, window_end)
    reference = expert_episode(env, lambda: reference_step(env), expert, task, 7, window_end)
    assert_same(new, reference)
    assert len(new) > 30 and not np.array_equal(new[1]['qpos'], new[-2]['qpos'])   # the arm moved


def test_arm_step_with_clipped_deferred_and_mid_step_ending_trajectories_replays_bit_for_bit(env):
    new = fixed_episode(env, env.step)
    reference = fixed_episode(env, lambda: reference_step(env))
    assert_same(new, reference)


def test_follower_advance_over_many_times_equals_one_time_at_a_time():
    names = ('a', 'b')
    first = window_trajectory(np.array([[1.0, -1.0], [2.0, 0.5], [2.5, 1.0]]), 3, 0.1, names)
    second = window_trajectory(np.array([[0.0, 0.0], [-1.0, 2.0]]), 2, 0.1, names, start_time=0.1371)
    times = 0.002 * np.arange(1, 251)   # s
    whole, one_by_one = TrajectoryFollower(names, 0.001), TrajectoryFollower(names, 0.001)
    for f in (whole, one_by_one):
        f.reset(np.array([0.5, 0.5]))
        f.follow(first, now=0.0)
        f.follow(second, now=0.0)   # pending until 0.1371 s, between two samples
    positions, velocities = whole.advance(times)
    rows = [one_by_one.advance(times[i:i + 1]) for i in range(len(times))]
    np.testing.assert_array_equal(positions, np.concatenate([p for p, _ in rows]))
    np.testing.assert_array_equal(velocities, np.concatenate([v for _, v in rows]))
    takeover = int(np.flatnonzero(times >= 0.1371 - 0.001)[0])
    np.testing.assert_array_equal(positions[takeover], positions[takeover - 1])   # starts where the first was
    assert not np.array_equal(positions[takeover + 1], positions[takeover])
    np.testing.assert_array_equal(positions[-1], second.positions[-1])            # then holds its last knot
    np.testing.assert_array_equal(velocities[-1], 0.0)
    assert not whole.active(times[-1]) and not one_by_one.active(times[-1])
