"""policy_node over control_msgs/FollowJointTrajectory against sim_node's JTC, in real time: goals
per window (the preemptions at seams are no failures), the controller's rejections and tolerance
aborts end the episode with their own end_reason."""
import subprocess

import pytest
import yaml

from policytrim_ros import launcher
from policytrim_ros.execution.metrics import read_jsonl
from policytrim_ros.launcher import NodeSpec
from policytrim_ros.nodes.sim_controller import FollowJointTrajectory

from harness import node_log

pytestmark = pytest.mark.skipif(FollowJointTrajectory is None, reason='control_msgs is not installed (bash '
                                '../shared/ros2-extras/install.sh .venv builds it)')


def run(tmp_path, launch, sim_overrides, policy_overrides, tasks=('reach',)):
    params = launcher.package_share() / 'config' / 'sim.yaml'
    log = tmp_path / 'episodes.jsonl'
    launch([NodeSpec('sim_node', [params], {'sim.step_mode': 'realtime', 'sim.real_time_factor': 2.0,
                                            **sim_overrides}),
            NodeSpec('policy_node', [params], {'policy.backend': 'expert', 'execution.chunk_size': 16,
                                               'execution.n_action_steps': 4, 'controller.interface': 'action',
                                               'episode.log_path': str(log), **policy_overrides})])
    runner = NodeSpec('episode_runner', [params], {'runner.tasks': list(tasks), 'runner.episodes_per_task': 1,
                                                  'runner.seed': 1000, 'runner.episode_timeout_s': 60.0})
    done = subprocess.run(runner.command(), env=launcher.ros_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return read_jsonl(log)


def test_goals_preempted_at_seams_are_no_failures(tmp_path, launch):
    controllers = tmp_path / 'controllers.yaml'
    shipped = yaml.safe_load((launcher.package_share() / 'config' / 'controllers.yaml').read_text())
    shipped['arm_controller']['ros__parameters']['action_monitor_rate'] = 0.5   # outcomes come late
    controllers.write_text(yaml.safe_dump(shipped))
    episodes = run(tmp_path, launch, {'controller.params_file': str(controllers)}, {})
    assert [(e.success, e.end_reason) for e in episodes] == [(True, 'success')]
    assert 'a new goal preempts the active one' in node_log(tmp_path, 'sim_node')   # seams did preempt
    assert 'aborted the window' not in node_log(tmp_path, 'policy_node')


def test_a_path_tolerance_abort_ends_the_episode_as_tolerance_violated(tmp_path, launch):
    controllers = tmp_path / 'controllers.yaml'
    shipped = yaml.safe_load((launcher.package_share() / 'config' / 'controllers.yaml').read_text())
    shipped['arm_controller']['ros__parameters']['constraints']['joint2'] = {'trajectory': 1e-5}
    controllers.write_text(yaml.safe_dump(shipped))
    episodes = run(tmp_path, launch, {'controller.params_file': str(controllers)}, {})
    assert [(e.success, e.end_reason) for e in episodes] == [(False, 'tolerance_violated')]
    assert 'error_code -4' in node_log(tmp_path, 'policy_node')


def test_a_goal_the_controller_rejects_ends_the_episode_as_controller_rejected(tmp_path, launch):
    # moving window ends forced on, and a default Jazzy controller: it rejects every goal
    episodes = run(tmp_path, launch, {'controller.distro': 'jazzy', 'controller.params_file': ''},
                   {'controller.window_end': 'moving', 'controller.parameter_timeout_s': 0.0})
    assert [(e.success, e.end_reason, e.inference_calls) for e in episodes] == [(False, 'controller_rejected', 1)]
    assert 'Velocity of last trajectory point' in node_log(tmp_path, 'sim_node')
