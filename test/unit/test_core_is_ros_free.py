import subprocess
import sys

CORE = ['policytrim_ros.config', 'policytrim_ros.constants', 'policytrim_ros.launcher', 'policytrim_ros.cli',
        'policytrim_ros.execution.executor', 'policytrim_ros.execution.episode', 'policytrim_ros.execution.metrics',
        'policytrim_ros.execution.jtc', 'policytrim_ros.nodes.policy_config',
        'policytrim_ros.envs.arm', 'policytrim_ros.policy.arm_expert', 'policytrim_ros.policy.factory',
        'policytrim_ros.policy.replay',
        'policytrim_ros.policy.torch_policy', 'policytrim_ros.policy.onnx', 'policytrim_ros.policy.checkpoint',
        'policytrim_ros.evaluation.sweep', 'policytrim_ros.evaluation.report', 'policytrim_ros.evaluation.ros']


def test_importing_the_core_does_not_import_rclpy():
    code = ('import sys\n' + ''.join(f'import {m}\n' for m in CORE) +
            'bad = [m for m in sys.modules if m == "rclpy" or m.startswith("rclpy.")]\n'
            'assert not bad, bad\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
