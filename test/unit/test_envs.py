"""Property tests over every embedded task (like dm_control's suite_test) and the arm's JTC contract."""
import threading

import numpy as np
import pytest

from policytrim_ros.envs import (TASKS, WORKSPACE_HIGH, WORKSPACE_LOW, ArmEnv, DisturbanceConfig, EnvConfig, make_task,
                                 task_names)
from policytrim_ros.policy.arm_expert import ScriptedExpert
from policytrim_ros.robots import UnknownTaskError
from policytrim_ros.robots.arm import ENVIRONMENT_STATE_LAYOUT, JOINT_NAMES, task_for_instruction
from policytrim_ros.trajectory import TimedTrajectory, TrajectoryError, window_trajectory

ALL_TASKS = task_names()
CUBE = ENVIRONMENT_STATE_LAYOUT['cube_position']
GOAL = ENVIRONMENT_STATE_LAYOUT['goal_position']


@pytest.fixture(scope='module')
def expert():
    return ScriptedExpert()


def run_expert(env, expert, task, seed, n_action_steps, max_steps=150, render=False):
    """Closed loop: chunk of 16, execute n_action_steps, observe, repeat. Returns (success, observations)."""
    obs = env.reset(task, seed, render=render)
    observations = [obs]
    while env.step_count < max_steps:
        chunk = expert.chunk(task, obs.joint_positions, obs.environment_state, 16, env.control_dt)
        env.set_trajectory(window_trajectory(chunk, n_action_steps, env.control_dt, env.joint_names))
        for _ in range(n_action_steps):
            if env.step():
                return True, observations
        obs = env.observe(render=render)
        observations.append(obs)
    return False, observations


def trajectory(positions, times, names=JOINT_NAMES, start_time=None):
    return TimedTrajectory(joint_names=tuple(names), times_from_start=np.asarray(times, dtype=float),
                           positions=np.asarray(positions, dtype=float), start_time=start_time)


@pytest.mark.parametrize('task', ALL_TASKS)
def test_same_seed_and_commands_replay_bit_for_bit(env, expert, task):
    first = run_expert(env, expert, task, seed=3, n_action_steps=4, max_steps=12, render=True)[1]
    second = run_expert(env, expert, task, seed=3, n_action_steps=4, max_steps=12, render=True)[1]
    assert len(first) == len(second) == 4
    for a, b in zip(first, second):
        for name in ('image', 'joint_positions', 'joint_velocities', 'environment_state'):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert (a.time, a.step) == (b.time, b.step)


def test_observations_do_not_depend_on_how_often_observe_is_called(env, expert):
    readings = []
    for observe_every_step in (True, False):
        obs = env.reset('push', 5, render=False)
        chunk = expert.chunk('push', obs.joint_positions, obs.environment_state, 16, env.control_dt)
        env.set_trajectory(window_trajectory(chunk, 8, env.control_dt, env.joint_names))
        for _ in range(8):
            env.step()
            if observe_every_step:
                env.observe()
        readings.append((env.observe(), env.observe()))
    (a, b), (c, _) = readings
    for name in ('image', 'joint_positions', 'environment_state'):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        np.testing.assert_array_equal(getattr(a, name), getattr(c, name), err_msg=name)


@pytest.mark.parametrize('task', ALL_TASKS)
def test_different_seeds_give_different_layouts(env, task):
    states = [env.reset(task, seed, render=False).environment_state for seed in range(4)]
    assert len({s.tobytes() for s in states}) == 4


@pytest.mark.parametrize('task', ALL_TASKS)
def test_reset_places_cube_and_goal_inside_the_workspace(env, task):
    for seed in range(10):
        obs = env.reset(task, seed, render=False)
        cube, goal = obs.environment_state[CUBE], obs.environment_state[GOAL]
        assert np.all(cube[:2] >= WORKSPACE_LOW) and np.all(cube[:2] <= WORKSPACE_HIGH)
        assert np.all(goal[:2] >= WORKSPACE_LOW) and np.all(goal[:2] <= WORKSPACE_HIGH)
        assert env.cube_resting and not env.cube_grasped
        if task == 'reach':
            assert TASKS[task].goal_height_range[0] <= goal[2] <= TASKS[task].goal_height_range[1]
        else:
            assert goal[2] == 0.0
            assert TASKS[task].goal_distance_range[0] <= np.linalg.norm(goal[:2] - cube[:2]) + 1e-9
        assert not TASKS[task]().is_success(env)


@pytest.mark.parametrize('task', ALL_TASKS)
def test_observation_has_the_documented_shapes(env, task):
    obs = env.reset(task, 0)
    assert obs.image.shape == (96, 96, 3) and obs.image.dtype == np.uint8 and obs.image.any()
    assert obs.joint_positions.shape == obs.joint_velocities.shape == (len(JOINT_NAMES),)
    assert obs.environment_state.shape == (10,) and obs.environment_state.dtype == np.float64
    assert obs.instruction == TASKS[task].instruction and task_for_instruction(obs.instruction) == task
    assert (obs.time, obs.step) == (0.0, 0)
    env.step()
    obs = env.observe(render=False)
    assert obs.step == 1 and obs.time == pytest.approx(env.control_dt)
    assert not obs.image.any()


def test_observe_renders_from_any_thread(env):
    """ROS executors call from thread pools; a GL context bound to one thread must not break that."""
    first = env.reset('reach', 0).image
    images = []
    worker = threading.Thread(target=lambda: images.append(env.observe().image))
    worker.start()
    worker.join()
    assert len(images) == 1 and images[0].shape == first.shape and env.observe().image.any()


@pytest.mark.parametrize('task', ALL_TASKS)
@pytest.mark.parametrize('n_action_steps', [4, 16])
def test_scripted_expert_solves_the_task_under_default_disturbances(env, expert, task, n_action_steps):
    successes = sum(run_expert(env, expert, task, seed, n_action_steps)[0] for seed in range(10))
    assert successes >= 9


@pytest.mark.parametrize('bad', [
    dict(names=JOINT_NAMES[:-1] + ('finger',)),
    dict(times=[0.2, 0.1]),
    dict(positions=[[0.0] * 7, [np.nan] * 7]),
])
def test_malformed_trajectory_is_rejected_and_the_arm_holds(quiet_env, bad):
    obs = quiet_env.reset('reach', 0, render=False)
    kwargs = dict(positions=[obs.joint_positions + 0.3] * 2, times=[0.1, 0.2], names=JOINT_NAMES)
    kwargs.update(bad)
    with pytest.raises(TrajectoryError):
        quiet_env.set_trajectory(trajectory(**kwargs))
    for _ in range(5):
        quiet_env.step()
    assert not quiet_env.trajectory_active
    held = quiet_env.observe(render=False).joint_positions
    np.testing.assert_allclose(held, obs.joint_positions, atol=2e-3)


def test_trajectory_is_tracked_then_its_last_knot_held(quiet_env):
    start = quiet_env.reset('reach', 0, render=False).joint_positions
    goal = start + np.array([0.3, 0.2, -0.2, 0.3, 0.2, -0.3, -0.02])
    chunk = np.linspace(start, goal, 11)[1:]
    quiet_env.set_trajectory(window_trajectory(chunk, 10, quiet_env.control_dt, JOINT_NAMES))
    for _ in range(5):
        quiet_env.step()
    np.testing.assert_allclose(quiet_env.observe(render=False).joint_positions[:6], chunk[4, :6], atol=0.01)
    for _ in range(8):
        quiet_env.step()
    assert not quiet_env.trajectory_active
    np.testing.assert_allclose(quiet_env.observe(render=False).joint_positions, goal, atol=2e-3)


def test_deferred_start_time_keeps_the_current_command_until_then(quiet_env):
    start = quiet_env.reset('reach', 0, render=False).joint_positions
    target = start + np.r_[0.2, np.zeros(6)]
    quiet_env.set_trajectory(trajectory([target], [0.1], start_time=quiet_env.time + 0.3))
    assert quiet_env.trajectory_active
    for _ in range(3):
        quiet_env.step()
    assert quiet_env.observe(render=False).joint_positions[0] == pytest.approx(start[0], abs=2e-3)
    for _ in range(4):
        quiet_env.step()
    assert not quiet_env.trajectory_active
    assert quiet_env.observe(render=False).joint_positions[0] == pytest.approx(target[0], abs=2e-3)


def test_hold_stops_the_arm_where_it_is_commanded(quiet_env):
    start = quiet_env.reset('reach', 0, render=False).joint_positions
    quiet_env.set_trajectory(trajectory([start + 0.3], [2.0]))
    for _ in range(5):
        quiet_env.step()
    quiet_env.hold()
    held = quiet_env.observe(render=False).joint_positions
    for _ in range(5):
        quiet_env.step()
    assert not quiet_env.trajectory_active
    np.testing.assert_allclose(quiet_env.observe(render=False).joint_positions, held, atol=0.01)


def test_kicks_move_a_resting_cube_only_when_enabled():
    kicked = ArmEnv(EnvConfig(disturbances=DisturbanceConfig(perturbation_probability=1.0)))
    quiet = ArmEnv(EnvConfig(disturbances=DisturbanceConfig.none()))
    for env in (kicked, quiet):
        start = env.reset('pick_place', 0, render=False).environment_state[CUBE]
        env.step()
        moved = np.linalg.norm(env.cube_position[:2] - start[:2])
        assert (moved > 0.01) if env is kicked else (moved < 1e-4)


def test_physics_randomization_stays_in_the_configured_ranges(env):
    nominal = ArmEnv(EnvConfig(disturbances=DisturbanceConfig.none()))
    cube = env.model.body('cube').id
    masses = []
    for seed in range(5):
        env.reset('push', seed, render=False)
        masses.append(env.model.body_mass[cube] / nominal.model.body_mass[cube])
    lo, hi = env.config.disturbances.mass_scale_range
    assert all(lo <= m <= hi for m in masses) and len(set(masses)) == 5


def test_unknown_names_suggest_the_closest_one(expert):
    with pytest.raises(UnknownTaskError, match="did you mean 'pick_place'"):
        make_task('pick_plcae')
    with pytest.raises(ValueError, match="did you mean 'push'"):
        ArmEnv(EnvConfig(disturbances=DisturbanceConfig.none())).reset('psh', 0, render=False)
    with pytest.raises(ValueError, match="did you mean 'perturbation_velocity'"):
        DisturbanceConfig.from_dict({'perturbation_speed': 1.0})
    with pytest.raises(ValueError, match='actuation_noise_correlation'):
        EnvConfig.from_dict({'disturbances': {'actuation_noise_correlation': 1.0}})
    with pytest.raises(ValueError, match="no expert for task 'stack'"):
        expert.chunk('stack', np.zeros(7), np.zeros(10), 16, 0.1)
    assert task_for_instruction('  Put the cube   on the GREEN target') == 'pick_place'
    assert task_for_instruction('stack the cubes') is None


def test_expert_rejects_malformed_observations(expert):
    with pytest.raises(ValueError, match='NaN'):
        expert.chunk('reach', np.full(7, np.nan), np.zeros(10), 16, 0.1)
    with pytest.raises(ValueError, match=r'must be \(7,\)'):
        expert.chunk('reach', np.zeros(6), np.zeros(10), 16, 0.1)


def test_a_policy_takes_its_cameras_tiles_in_its_order():
    from policytrim_ros.envs.base import camera_tiles, select_tiles
    image = np.concatenate([np.full((2, 3, 3), k, np.uint8) for k in range(3)], axis=1)   # tiles 0, 1, 2
    tiles = camera_tiles(('wrist', 'workspace', 'scene'), ('scene', 'wrist'))
    assert tiles == (2, 0)
    assert select_tiles(image, 3, tiles)[0, :, 0].tolist() == [2, 2, 2, 0, 0, 0]
    assert select_tiles(image, 3, (1,)).shape == (2, 3, 3)
    with pytest.raises(ValueError, match=r"cameras \['elbow'\] are not among the rendered cameras"):
        camera_tiles(('scene',), ('scene', 'elbow'))


def test_an_unnamed_single_camera_policy_sees_the_first_camera_of_a_multi_camera_env():
    from policytrim_ros.execution.config import ExecutionConfig
    from policytrim_ros.execution.episode import run_episode
    from policytrim_ros.policy.base import PolicyMetadata

    class Recorder:
        metadata = PolicyMetadata('recorder', 4, JOINT_NAMES, (32, 32))   # no camera names: an older checkpoint
        images = []

        def reset(self):
            pass

        def predict_action_chunk(self, observation):
            self.images.append(observation.image)
            return np.repeat(observation.joint_positions[None], 4, axis=0)

    config = ExecutionConfig(chunk_size=4, n_action_steps=4, max_episode_steps=4)
    for cameras in (('scene_camera',), ('scene_camera', 'wrist_camera')):
        env = ArmEnv(EnvConfig(cameras=cameras, image_width=32, image_height=32))
        assert run_episode(env, Recorder(), config, 'reach', 3)[0].inference_calls == 1
        env.close()
    first, second = Recorder.images
    assert first.shape == (32, 32, 3)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize('task', ALL_TASKS)
def test_end_state_at_reset_names_how_an_unsolved_episode_failed(env, task):
    env.reset(task, 5, render=False)
    state = env.end_state()
    assert state['goal_distance'] > 0.05   # every task starts away from its goal
    assert state['failure_mode'] == {'reach': 'missed_target', 'push': 'cube_untouched',
                                     'pick_place': 'never_grasped'}[task]
    assert env.cube_max_lift < 0.005 and not env.cube_was_grasped


def test_expert_pick_place_records_grasp_and_lift_and_a_solved_end_has_no_failure_mode(env, expert):
    solved, _ = run_expert(env, expert, 'pick_place', 1, 4)
    assert solved
    state = env.end_state()
    assert 'failure_mode' not in state and state['goal_distance'] < make_task('pick_place').success_radius
    assert state['cube_was_grasped'] and state['cube_max_lift'] > 0.02 and not state['cube_grasped']


@pytest.mark.parametrize('state, mode', [
    ({'goal_distance': 0.01, 'cube_grasped': True}, 'holding_on_target'),
    ({'goal_distance': 0.20, 'cube_grasped': True}, 'holding_off_target'),
    ({'goal_distance': 0.20, 'cube_grasped': False, 'cube_was_grasped': False, 'cube_max_lift': 0.0}, 'never_grasped'),
    ({'goal_distance': 0.20, 'cube_grasped': False, 'cube_was_grasped': True, 'cube_max_lift': 0.005}, 'not_lifted'),
    ({'goal_distance': 0.20, 'cube_grasped': False, 'cube_was_grasped': True, 'cube_max_lift': 0.08}, 'dropped'),
    ({'goal_distance': 0.01, 'cube_grasped': False, 'cube_was_grasped': True, 'cube_max_lift': 0.08},
     'on_target_not_resting'),
])
def test_pick_place_failure_modes(state, mode):
    assert make_task('pick_place').failure_mode(state) == mode


@pytest.mark.parametrize('state, mode', [({'goal_distance': 0.15, 'cube_moved': 0.0}, 'cube_untouched'),
                                         ({'goal_distance': 0.08, 'cube_moved': 0.06}, 'off_target'),
                                         ({'goal_distance': 0.02, 'cube_moved': 0.12}, 'on_target_moving')])
def test_push_failure_modes(state, mode):
    assert make_task('push').failure_mode(state) == mode


def test_end_state_before_reset_is_an_error():
    fresh = ArmEnv()
    try:
        with pytest.raises(RuntimeError, match='reset'):
            fresh.end_state()
    finally:
        fresh.close()
