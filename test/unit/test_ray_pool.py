"""Rollouts on Ray (the optional ``ray`` extra): the same rollouts as the local pool, job for job
(one env a worker or several in lockstep), and the same training iteration, with 2 Ray workers in
a private network namespace (loopback only)."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from policytrim_ros.config import ConfigError, from_dict
from policytrim_ros.training.horizon_trainer import HorizonTrainConfig
from policytrim_ros.training.trainer import PolicyTrimConfig
from policytrim_ros.training.engines import open_rollouts
from policytrim_ros.training.workers import RolloutSetup, RolloutsConfig

CHECK = Path(__file__).with_name('ray_pool_check.py')


def test_rollouts_section_is_typed_and_refuses_unknown_keys_and_bad_values():
    cfg = from_dict(PolicyTrimConfig, {'rollouts': {'engine': 'ray', 'address': 'ray://head:10001',
                                                    'workers_per_node': 4, 'node_resource': 'sim'}})
    assert cfg.rollouts == RolloutsConfig('ray', 'ray://head:10001', 4, 'sim')
    assert from_dict(HorizonTrainConfig, {'rollouts': {'address': '10.0.0.2:6379'}}).rollouts.engine == 'local'
    with pytest.raises(ConfigError, match="unknown config key 'rollouts.engin' \\(did you mean 'engine'"):
        from_dict(PolicyTrimConfig, {'rollouts': {'engin': 'ray'}})
    for values, rule in [({'engine': 'spark'}, "rollouts.engine 'spark' must be one of"),
                         ({'address': 'head'}, "rollouts.address 'head' must be"),
                         ({'address': 'ray://head:port'}, "rollouts.address 'ray://head:port' must be"),
                         ({'workers_per_node': 0}, r'rollouts.workers_per_node \(0\) must be >= 1'),
                         ({'cpus_per_worker': 0.0}, r'rollouts.cpus_per_worker \(0.0\) must be > 0'),
                         ({'node_resource': 'a b'}, "rollouts.node_resource 'a b' must be")]:
        with pytest.raises(ConfigError, match=rule):
            from_dict(HorizonTrainConfig, {'rollouts': values})


def test_engine_ray_without_ray_installed_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, 'ray', None)   # as if the extra were not installed
    setup = RolloutSetup(model=None, env=None, safety=None)
    with pytest.raises(RuntimeError, match=r"needs Ray, an optional extra: pip install 'policytrim_ros\[ray\]'"):
        open_rollouts(setup, 0, RolloutsConfig(engine='ray'))


def _private_network_reason() -> str:
    """Why a private network namespace cannot be made here ('' if it can)."""
    if importlib.util.find_spec('ray') is None:
        return "ray is not installed (the optional extra: pip install 'policytrim_ros[ray]')"
    if not shutil.which('unshare') or not shutil.which('ip'):
        return 'unshare (util-linux) or ip (iproute2) is missing'
    probe = subprocess.run(['unshare', '-n', 'ip', 'link', 'set', 'lo', 'up'], capture_output=True, text=True)
    if probe.returncode:
        return f'unshare -n is not permitted here (needs root or CAP_SYS_ADMIN): {probe.stderr.strip()}'
    return ''


def test_ray_pool_rolls_out_and_trains_as_the_local_pool_inside_a_private_network(tmp_path):
    reason = _private_network_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / 'result.json'
    # Ray listens on every interface and advertises the machine's address (docs/scale-out.md): in a
    # network namespace of its own, with only loopback, nothing can reach it or leave. Token auth is
    # off in there (nothing else can connect), so no token is written to ~/.ray.
    # Ray's session folder holds unix sockets, whose paths must stay under 108 bytes: not in tmp_path
    with tempfile.TemporaryDirectory(prefix='ray-', dir='/tmp', ignore_cleanup_errors=True) as ray_tmp:
        env = {**os.environ, 'RAY_AUTH_MODE': 'disabled', 'RAY_USAGE_STATS_ENABLED': '0', 'RAY_TMPDIR': ray_tmp}
        run = subprocess.run(['unshare', '-n', 'sh', '-c', 'ip link set lo up && exec "$0" "$1" "$2"',
                              sys.executable, str(CHECK), str(out)], env=env, capture_output=True, text=True,
                             timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    result = json.loads(out.read_text())
    assert result['interfaces'] == ['lo']
    assert result['workers'] == 2 and result['workers_after_loss'] == 1
    assert result['ray'] == result['local']                  # job for job, to the last bit of every array
    assert result['ray_v2'] == result['local_v2'] != result['local']   # new weights, picked up by every worker
    assert result['ray_v2_no_weights'] == result['ray_v2']   # None: the same version again
    assert result['ray_v2_one_lost'] == result['ray_v2']     # a lost worker's jobs ran on the other
    # 2 envs a worker in lockstep: the same shares and batches in processes and in actors, to the last bit
    assert result['ray_lockstep'] == result['local_lockstep']
    outcome = [{k: v for k, v in r.items() if k != 'sha256'} for r in result['local_lockstep']]
    assert outcome == [{k: v for k, v in r.items() if k != 'sha256'} for r in result['local']]
    assert len(result['placement_errors']) == 2
    assert "no node of the Ray cluster offers the resource 'arm_9'" in result['placement_errors'][0]
    assert 'has 2 CPUs for Ray, fewer than rollouts.workers_per_node (3)' in result['placement_errors'][1]
    # one training iteration with the workers on the rollout node of a two-node cluster: the same update
    assert result['scalars']['ray'] == result['scalars']['local']
    assert float(result['scalars']['ray']['windows']) > 0 and result['same_weights']
