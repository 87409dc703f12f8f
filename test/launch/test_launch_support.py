"""launch_support's pure parts: the namespace the nodes get and the params file re-keyed for it."""
import importlib.util
from pathlib import Path

import pytest
import yaml

if not all(importlib.util.find_spec(m) for m in ('launch', 'launch_ros')):
    pytest.skip('the ROS 2 launch packages are not installed in the venv: scripts/setup.sh installs them when '
                '../shared/ros2-extras exists next to the repository', allow_module_level=True)

from launch import LaunchContext  # noqa: E402

from policytrim_ros import launch_support  # noqa: E402


def context(namespace='', pushed=None):
    ctx = LaunchContext()
    ctx.launch_configurations['namespace'] = namespace
    if pushed is not None:
        ctx.launch_configurations['ros_namespace'] = pushed
    return ctx


@pytest.mark.parametrize('namespace, pushed, expected', [
    ('', None, ''), ('arm1', None, '/arm1'), ('/arm1/', None, '/arm1'), ('arm1', '/cell', '/cell/arm1'),
    ('/arm1', '/cell', '/arm1'), ('', '/cell', '/cell')])
def test_full_namespace_is_the_one_launch_ros_gives_the_nodes(namespace, pushed, expected):
    assert launch_support.full_namespace(context(namespace, pushed)) == expected


def test_params_file_sections_are_keyed_by_the_nodes_full_names_in_a_namespace(tmp_path):
    path = tmp_path / 'p.yaml'
    path.write_text(yaml.safe_dump({'policy_node': {'ros__parameters': {'a': 1}},
                                    '/**': {'ros__parameters': {'b': 2}},
                                    '/other/sim_node': {'ros__parameters': {'c': 3}}}))
    assert launch_support.params_in_namespace(str(path), '') == str(path)
    rekeyed = Path(launch_support.params_in_namespace(str(path), '/arm1'))
    keyed = yaml.safe_load(rekeyed.read_text())
    rekeyed.unlink()
    assert keyed == {'/arm1/policy_node': {'ros__parameters': {'a': 1}}, '/**': {'ros__parameters': {'b': 2}},
                     '/other/sim_node': {'ros__parameters': {'c': 3}}}
