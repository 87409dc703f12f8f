"""The plug-in backend: a user's ChunkPolicy class named 'module:Class' runs in the core episode loop
(and policy_node: test/nodes/test_policy_server_nodes.py); mistakes in the spec stop with a message
naming policy.plugin. Also the inference thread policy_node runs every call on."""
import threading
import time

import numpy as np
import pytest

from policytrim_ros.config import ConfigError
from policytrim_ros.envs.arm import ArmEnv
from policytrim_ros.execution.config import ExecutionConfig
from policytrim_ros.execution.episode import run_episode
from policytrim_ros.execution.inference import InferenceThread
from policytrim_ros.policy.factory import PolicyConfig, make_policy
from policytrim_ros.robots.arm import JOINT_NAMES

EXAMPLE = 'policytrim_ros.policy.examples.move_to_pose:MoveToPosePolicy'
TARGET = [0.3, 0.2, 0.1, 0.0, 0.0, 0.0, 0.02]


def test_the_example_plugin_drives_the_arm_in_the_core_loop():
    config = PolicyConfig(backend='plugin', plugin=EXAMPLE, plugin_args=f'{{target: {TARGET}, speed: 0.5}}')
    policy = make_policy(config, 16, 0.1, JOINT_NAMES)
    assert policy.metadata.name == 'move_to_pose' and policy.metadata.image_size is None
    env = ArmEnv()
    metrics, records = run_episode(env, policy, ExecutionConfig(16, 8, 0.1, 40), 'reach', 1000)
    assert (metrics.end_reason, metrics.steps, metrics.inference_calls) == ('max_steps', 40, 5)
    final = env.observe(render=False).joint_positions
    np.testing.assert_allclose(final[:6], TARGET[:6], atol=0.03)   # 4 s at 0.5 rad/s reaches every target


@pytest.mark.parametrize('plugin, args, message', [
    ('no_such_module_here:Policy', '', 'cannot import no_such_module_here'),
    ('policytrim_ros.policy.examples.move_to_pose:MoveToPose', '', "has no 'MoveToPose' (did you mean "
                                                                   "'MoveToPosePolicy'?)"),
    (EXAMPLE, '{colour: red}', "cannot be built with keyword arguments"),
    ('policytrim_ros.policy.base:Observation', '', 'cannot be built'),
    ('collections:OrderedDict', '', 'is not a ChunkPolicy'),
])
def test_plugin_mistakes_name_policy_plugin(plugin, args, message):
    with pytest.raises(ConfigError, match='policy.plugin') as err:
        make_policy(PolicyConfig(backend='plugin', plugin=plugin, plugin_args=args), 16, 0.1, JOINT_NAMES)
    assert message in str(err.value)


def test_plugin_specs_and_args_are_checked_with_the_config():
    with pytest.raises(ValueError, match="policy.plugin 'move_to_pose' must name the plug-in class"):
        PolicyConfig(backend='plugin', plugin='move_to_pose')
    with pytest.raises(ValueError, match='must be a mapping of keyword arguments'):
        PolicyConfig(backend='plugin', plugin=EXAMPLE, plugin_args='[1, 2]')
    with pytest.raises(ConfigError, match=r'chunk_size \(16\) must equal the chunk size H \(8\) of the plug-in'):
        from policytrim_ros.policy.factory import check_policy
        check_policy(make_policy(PolicyConfig(backend='plugin', plugin=EXAMPLE), 8, 0.1, JOINT_NAMES),
                     f'the plug-in {EXAMPLE}', 16, JOINT_NAMES)


def test_the_inference_thread_runs_one_call_at_a_time_and_hands_back_results_and_errors():
    done = threading.Event()
    worker = InferenceThread(done.set)
    release = threading.Event()
    worker.submit('slow', lambda: release.wait(10) and 42)
    assert worker.busy and worker.take() is None
    with pytest.raises(RuntimeError, match='already in flight'):
        worker.submit('second', lambda: 0)
    time.sleep(0.05)
    assert worker.running_for() >= 0.05   # the caller's thread is free while the call runs
    release.set()
    assert done.wait(5)
    result = worker.take()
    assert (result.tag, result.value, result.error) == ('slow', 42, None) and not worker.busy
    assert worker.take() is None          # handed back once
    done.clear()
    worker.submit('boom', lambda: 1 / 0)
    assert done.wait(5)
    result = worker.take()
    assert result.tag == 'boom' and isinstance(result.error, ZeroDivisionError)
