"""Unit-test fixtures shared across modules: the embedded arm, as the tests of each module see it.

Module-scoped, as each module had them: one MuJoCo model per module (reset per episode), closed
at its end. test_metaworld.py overrides ``env`` and ``quiet_env`` with its Meta-World ones.
"""
import pytest

from policytrim_ros.envs import ArmEnv, DisturbanceConfig, EnvConfig


@pytest.fixture(scope='module')
def env():
    """The embedded arm with the default config (default disturbances, the scene camera)."""
    env = ArmEnv()
    yield env
    env.close()


@pytest.fixture(scope='module')
def quiet_env():
    """No disturbances: joint readings are exact, so holding and tracking can be checked tightly."""
    env = ArmEnv(EnvConfig(disturbances=DisturbanceConfig.none()))
    yield env
    env.close()
