"""All 50 Meta-World v3 tasks by name: the instruction table, reset and step through ``MetaWorldEnv``,
Meta-World's own scripted expert per task, and its success within the task's step limit.

The core tasks' deeper properties (disturbances, layouts, images) are test_metaworld.py's.
"""
import mujoco
import numpy as np
import pytest
from metaworld.env_dict import ALL_V3_ENVIRONMENTS

from policytrim_ros.data.bag import read_episode_bag
from policytrim_ros.data.collect import collect_demonstrations
from policytrim_ros.envs.factory import task_step_limit, task_suite
from policytrim_ros.envs.metaworld import MetaWorldEnv
from policytrim_ros.envs.metaworld_config import MetaWorldConfig, MetaWorldDisturbanceConfig
from policytrim_ros.execution.config import ExecutionConfig
from policytrim_ros.execution.episode import run_episode
from policytrim_ros.evaluation.sweep import SweepConfig, run_sweep_end_states
from policytrim_ros.policy.metaworld_expert import MetaWorldExpertPolicy
from policytrim_ros.robots import UnknownTaskError
from policytrim_ros.robots.metaworld import CONTROL_DT, MW_OBS_DIM, STATE_SPEC
from policytrim_ros.robots.metaworld_tasks import CORE_TASKS, METAWORLD_TASKS
from policytrim_ros.trajectory import TimedTrajectory

ALL_TASKS = tuple(METAWORLD_TASKS)
DEFAULT_STEP_LIMIT = ExecutionConfig().max_episode_steps  # 150, as config/sim.yaml
EXPERT_SEEDS = (1000, 1001, 1002)  # evaluation seeds: MT1 variants 0, 1 and 2
SWEEP_SEED = 1003
# Meta-World's class names follow the task names, except this one
POLICY_NAME_EXCEPTIONS = {'peg-insert-side-v3': 'SawyerPegInsertionSideV3Policy'}


@pytest.fixture(scope='module')
def env():
    """The env ``policytrim eval`` runs Meta-World tasks in: the default MetaWorldConfig."""
    env = MetaWorldEnv('reach-v3')
    yield env
    env.close()


@pytest.fixture(scope='module')
def quiet_env():
    env = MetaWorldEnv('reach-v3', MetaWorldConfig(disturbances=MetaWorldDisturbanceConfig.none()))
    yield env
    env.close()


def test_the_table_has_every_v3_task_once_with_its_own_instruction():
    assert len(METAWORLD_TASKS) == 50 and set(METAWORLD_TASKS) == set(ALL_V3_ENVIRONMENTS)
    instructions = [spec.instruction for spec in METAWORLD_TASKS.values()]
    assert all(i == i.strip() and len(i.split()) >= 2 for i in instructions)
    assert len(set(instructions)) == 50
    # the instructions the shipped Meta-World checkpoints were trained on
    assert [METAWORLD_TASKS[t].instruction for t in CORE_TASKS] == [
        'reach the red target', 'push the puck to the green goal', 'pick up the puck and place it at the blue goal']
    assert {t: METAWORLD_TASKS[t].randomized for t in CORE_TASKS} == {
        'reach-v3': 'goal', 'push-v3': 'object', 'pick-place-v3': 'object'}


@pytest.mark.parametrize('name, close', [
    ('door-opne-v3', "did you mean 'door-open-v3'?"),
    ('drawer-open', "'drawer-open-v3'"),
    ('push-v2', "did you mean 'push-v3'?"),
])
def test_unknown_names_stop_naming_the_value_and_the_closest_tasks(name, close):
    for make in (lambda: MetaWorldEnv(name), lambda: task_suite([name])):
        with pytest.raises(UnknownTaskError) as raised:
            make()
        message = str(raised.value)
        assert f"unknown task '{name}'" in message or f"unknown Meta-World task '{name}'" in message
        assert close in message and 'closest Meta-World tasks:' in message
    with pytest.raises(UnknownTaskError, match=r"none of the 50 Meta-World tasks is close: \['reach-v3'"):
        MetaWorldEnv('xyzzy')


@pytest.mark.parametrize('task', ALL_TASKS)
def test_the_env_resets_and_steps_the_task_by_name(env, task):
    spec = METAWORLD_TASKS[task]
    obs = env.reset(task, 1001, render=False)
    assert obs.instruction == spec.instruction == env.instruction and env.task == task
    raw = env._loaded[task].env
    assert raw.frame_skip * raw.model.opt.timestep == pytest.approx(CONTROL_DT, abs=1e-12) == env.control_dt
    layout = len(raw._last_rand_vec) if spec.fixture else 0
    assert obs.environment_state.shape == (MW_OBS_DIM + mujoco.mj_stateSize(raw.model, STATE_SPEC) + layout,)
    np.testing.assert_array_equal(env.reset(task, 1001, render=False).environment_state, obs.environment_state)
    # 8 steps of 0.5 cm up each, then 10 held: the hand follows its mocap target 4 cm up
    env.set_trajectory(TimedTrajectory(env.joint_names, CONTROL_DT * np.arange(1, 9), np.tile([0, 0, 0.5, -1], (8, 1))))
    for _ in range(18):
        env.step()
    raised = env.observe(render=False).joint_positions[2] - obs.joint_positions[2]
    assert env.step_count == 18 and 0.02 < raised < 0.06


def test_fixture_tasks_are_the_ones_whose_variants_move_a_body(env):
    """``fixture`` is what the planner's rebuild needs: a body placed at reset, outside mj_getState."""
    for task, spec in METAWORLD_TASKS.items():
        positions = []
        for seed in EXPERT_SEEDS:
            env.reset(task, seed, render=False)
            positions.append(env._loaded[task].env.model.body_pos.copy())
        moved = any(not np.array_equal(positions[0], p) for p in positions[1:])
        assert moved == spec.fixture, task


@pytest.mark.parametrize('task', ALL_TASKS)
def test_the_expert_is_meta_worlds_own_scripted_policy_for_the_task(task):
    expert = MetaWorldExpertPolicy(task, chunk_size=1)._expert
    words = task.removesuffix('-v3').split('-')
    name = POLICY_NAME_EXCEPTIONS.get(task, 'Sawyer' + ''.join(w.capitalize() for w in words) + 'V3Policy')
    assert type(expert).__name__ == name and type(expert).__module__.startswith('metaworld.policies.')


@pytest.mark.parametrize('task', ALL_TASKS)
def test_the_expert_succeeds_within_the_step_limit_on_one_of_a_few_seeds(env, task):
    """Closed loop (H = h = 1) in the default env, as ``policytrim eval --chunk-size 1`` runs it."""
    limit = task_step_limit(task, DEFAULT_STEP_LIMIT)
    expert = MetaWorldExpertPolicy(task, chunk_size=1)
    results = []
    for seed in EXPERT_SEEDS:
        metrics, _ = run_episode(env, expert, ExecutionConfig(1, 1, CONTROL_DT, limit), task, seed)
        results.append((metrics.success, metrics.steps))
        if metrics.success:
            break
    assert results[-1][0] and results[-1][1] <= limit, results


def test_step_limits_lengthen_the_episodes_of_their_tasks_only():
    limited = {t: spec.step_limit for t, spec in METAWORLD_TASKS.items() if spec.step_limit is not None}
    assert len(limited) == 9 and not set(limited) & set(CORE_TASKS)
    assert all(DEFAULT_STEP_LIMIT < limit <= MetaWorldConfig().max_path_length for limit in limited.values())
    assert task_step_limit('push-back-v3', DEFAULT_STEP_LIMIT) == 450 and task_step_limit('push-back-v3', 480) == 480
    assert task_step_limit('door-open-v3', DEFAULT_STEP_LIMIT) == DEFAULT_STEP_LIMIT
    assert task_step_limit('pick_place', 40) == 40 and task_step_limit('push-v3', 40) == 40
    sweep = SweepConfig(tasks=('push-back-v3', 'door-open-v3'), control_dt=CONTROL_DT)
    assert sweep.execution(4, 'push-back-v3').max_episode_steps == 450
    assert sweep.execution(4, 'door-open-v3').max_episode_steps == sweep.execution(4).max_episode_steps == 150


def test_eval_runs_tasks_by_name_at_their_step_limits():
    """The sweep behind ``policytrim eval``: the suite expert (H = 16) recognises each task from its
    instruction; disassemble-v3's episode from seed 1003 takes 159 steps, more than the default 150."""
    config = SweepConfig(tasks=('door-open-v3', 'disassemble-v3'), n_action_steps=(16,), episodes=1, seed=SWEEP_SEED,
                         control_dt=CONTROL_DT, workers=1)
    [(door, door_end), (nut, nut_end)] = run_sweep_end_states(config, progress=False)[16]
    assert (door.task, door.success, door.inference_calls) == ('door-open-v3', True, -(-door.steps // 16))
    assert (nut.task, nut.success) == ('disassemble-v3', True) and DEFAULT_STEP_LIMIT < nut.steps <= 350
    assert 'failure_mode' not in door_end and 'failure_mode' not in nut_end


def test_collect_writes_a_demonstration_longer_than_the_default_limit(tmp_path):
    """disassemble-v3 from seed 40 takes 153 steps with the efficient operator: cut at 150, it would fail
    and write no bag."""
    [path] = collect_demonstrations(['disassemble-v3'], 1, 'efficient', 40, tmp_path, workers=1, progress=False)
    episode = read_episode_bag(path)
    assert episode.success and episode.instruction == METAWORLD_TASKS['disassemble-v3'].instruction
    assert DEFAULT_STEP_LIMIT < episode.steps <= 350


@pytest.mark.slow
@pytest.mark.parametrize('task', ALL_TASKS)
def test_h16_chunks_replay_the_closed_loop_exactly_without_disturbances(quiet_env, task):
    """The H = 16 planner rebuilds the observed scene (fixtures included) from environment_state:
    without disturbances its open-loop chunks are the step-wise expert's actions, on variants other
    than its private env's own (variant 0)."""
    step_wise, planner = MetaWorldExpertPolicy(task, 1), MetaWorldExpertPolicy(task, 16)
    for seed in (1001, 1002, 1003):
        closed, _ = run_episode(quiet_env, step_wise, ExecutionConfig(1, 1, CONTROL_DT, 500), task, seed)
        if closed.success:
            break
    final = quiet_env.observe(render=False).environment_state
    chunked, _ = run_episode(quiet_env, planner, ExecutionConfig(16, 16, CONTROL_DT, 500), task, seed)
    assert closed.success and chunked.success and chunked.steps == closed.steps
    assert chunked.inference_calls == -(-closed.steps // 16)
    np.testing.assert_array_equal(quiet_env.observe(render=False).environment_state, final)
