"""Robots as Ray rollout workers (the optional ``ray`` extra): two simulated robots, each a sim_node and
a policy_node with trainer.enabled on a ROS domain of its own, are the two Ray workers of one PolicyTrim
Stage 1 iteration, which gives the in-process trainer's scalars; in a private network namespace
(loopback only). The config rules and the pool's choices without Ray: test_robot_workers.py."""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from test_ray_pool import _private_network_reason

CHECK = Path(__file__).with_name('ray_robots_check.py')


def test_two_simulated_robots_on_two_ros_domains_train_as_the_in_process_trainer(tmp_path):
    reason = _private_network_reason()
    if reason:
        pytest.skip(reason)
    # As test_ray_pool.py: Ray (and DDS) in a network namespace of their own, with only loopback;
    # Ray's session folder holds unix sockets, whose paths must stay under 108 bytes: not in tmp_path
    with tempfile.TemporaryDirectory(prefix='ray-', dir='/tmp', ignore_cleanup_errors=True) as ray_tmp:
        env = {**os.environ, 'RAY_AUTH_MODE': 'disabled', 'RAY_USAGE_STATS_ENABLED': '0', 'RAY_TMPDIR': ray_tmp}
        run = subprocess.run(['unshare', '-n', 'sh', '-c', 'ip link set lo up && exec "$0" "$1" "$2"',
                              sys.executable, str(CHECK), str(tmp_path)], env=env, capture_output=True, text=True,
                             timeout=600)
    logs = ''.join(f'--- {p.name}\n{p.read_text()[-1500:]}' for p in sorted((tmp_path / 'logs').glob('*.log')))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:] + logs
    result = json.loads((tmp_path / 'result.json').read_text())
    assert result['interfaces'] == ['lo']
    assert result['in_process_returncode'] == 0, logs
    assert not result['learner_imported_rclpy']            # the learner needs no ROS
    assert result['episodes'] == {'arm1': 2, 'arm2': 2}    # both robots ran their share, each kept its episodes
    assert result['scalars']['ray'] == result['scalars']['in-process']   # the same update, to the last digit
    assert any(metric == 'success_rate' for _, metric, _ in result['scalars']['ray'])
