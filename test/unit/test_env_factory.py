"""Task names pick the env (embedded arm or Meta-World), its operator, its expert and its control step."""
import pytest

from policytrim_ros.envs.arm import ArmEnv
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.factory import make_env, suite_control_dt, task_suite
from policytrim_ros.envs.metaworld import MetaWorldEnv
from policytrim_ros.envs.metaworld_config import MetaWorldConfig
from policytrim_ros.envs.operators import make_operator
from policytrim_ros.evaluation.sweep import SweepConfig
from policytrim_ros.policy.arm_expert import ScriptedExpertPolicy
from policytrim_ros.policy.factory import PolicyConfig, make_policy
from policytrim_ros.policy.metaworld_expert import MetaWorldSuiteExpertPolicy
from policytrim_ros.robots import UnknownTaskError
from policytrim_ros.robots.arm import JOINT_NAMES
from policytrim_ros.robots.metaworld import ACTION_NAMES, CONTROL_DT


def test_task_names_pick_the_env_with_its_own_config():
    assert task_suite(['reach', 'pick_place']) == 'arm'
    assert task_suite(('reach-v3', 'push-v3', 'pick-place-v3')) == 'metaworld'
    arm = make_env(['push'], EnvConfig(control_dt=0.05), MetaWorldConfig(image_width=64))
    world = make_env(['pick-place-v3'], EnvConfig(image_width=64), MetaWorldConfig(image_width=128))
    try:
        assert isinstance(arm, ArmEnv) and arm.control_dt == 0.05 and arm.joint_names == JOINT_NAMES
        assert isinstance(world, MetaWorldEnv) and world.joint_names == ACTION_NAMES
        assert world.control_dt == pytest.approx(CONTROL_DT, abs=1e-12) == suite_control_dt('metaworld')
        assert world.reset('reach-v3', 0).image.shape == (96, 128, 3)  # any supported task, not just the first
    finally:
        arm.close()
        world.close()


@pytest.mark.parametrize('tasks, error, message', [
    (['push-v2'], UnknownTaskError, "unknown task 'push-v2' (did you mean 'push-v3'?)"),
    (['pick place'], UnknownTaskError, "unknown task 'pick place' (did you mean 'pick_place'?)"),
    (['reach', 'push-v3'], ValueError, "mix embedded arm tasks ['reach'] and Meta-World tasks ['push-v3']"),
    ([], ValueError, 'must be a non-empty list'),
    ('reach', ValueError, 'must be a non-empty list'),
])
def test_unknown_and_mixed_task_names_are_clear_errors(tasks, error, message):
    with pytest.raises(error) as raised:
        make_env(tasks)
    assert message in str(raised.value)


def test_operators_and_expert_backend_follow_the_suite():
    with pytest.raises(ValueError, match="suite 'gazebo' must be 'arm' or 'metaworld'"):
        make_operator('efficient', suite='gazebo')
    assert isinstance(make_policy(PolicyConfig(), 16, CONTROL_DT, ACTION_NAMES), MetaWorldSuiteExpertPolicy)
    assert isinstance(make_policy(PolicyConfig(), 16, 0.1, JOINT_NAMES), ScriptedExpertPolicy)


def test_sweep_config_checks_tasks_and_control_dt_against_the_env():
    assert SweepConfig(tasks=('reach-v3',), control_dt=CONTROL_DT).metaworld == MetaWorldConfig()
    with pytest.raises(ValueError, match=r'control_dt \(0.1\) must equal the control step of the metaworld env'):
        SweepConfig(tasks=('reach-v3',))
    with pytest.raises(ValueError, match=r'control_dt \(0.1\) must equal the control step of the arm env \(0.05 s\)'):
        SweepConfig(env=EnvConfig(control_dt=0.05))
    with pytest.raises(ValueError, match='mix embedded arm tasks'):
        SweepConfig(tasks=('reach', 'reach-v3'))
