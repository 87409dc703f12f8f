"""Robots as Ray rollout workers, without Ray or ROS: the ``rollouts.robots`` config and its rules,
where the pool places each robot's worker, how it splits and re-runs the jobs (a stand-in ``ray``
module), and that the learner needs no rclpy. The run through real robots' nodes on two ROS domains
is test_ray_robots.py."""
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from policytrim_ros.config import ConfigError, from_dict
from policytrim_ros.training.engines import open_rollouts
from policytrim_ros.training.robots import (EpisodeLinkConfig, RobotWorkerConfig, missing_robots,
                                            robot_actor_options, robot_run_dir)
from policytrim_ros.training.trainer import PolicyTrimConfig
from policytrim_ros.training.workers import RolloutSetup, RolloutsConfig


def rollouts(values: dict) -> RolloutsConfig:
    return from_dict(PolicyTrimConfig, {'rollouts': values}).rollouts


def test_robots_are_typed_entries_with_defaults_and_their_episode_settings():
    cfg = rollouts({'engine': 'ray', 'robots': [{'resource': 'arm1'},
                                                {'resource': 'arm-2', 'ros_domain_id': 7, 'namespace': '/arm2'}],
                    'episodes': {'reset': 'operator', 'episode_timeout_s': 30}, 'robot_run_dir': '/data/robots'})
    assert cfg.robots == (RobotWorkerConfig('arm1'), RobotWorkerConfig('arm-2', 7, '/arm2'))
    assert cfg.robots[0].ros_domain_id == -1 and cfg.robots[0].namespace == ''
    assert cfg.episodes == EpisodeLinkConfig(reset='operator', episode_timeout_s=30.0)
    assert rollouts({}).robots == () and rollouts({}).episodes == EpisodeLinkConfig()   # simulators, as before


def test_trainer_node_keeps_the_same_episode_link_config():
    from policytrim_ros.nodes.trainer_node import EpisodeLinkConfig as NodeEpisodeLinkConfig, TrainerNodeConfig
    assert NodeEpisodeLinkConfig is EpisodeLinkConfig and TrainerNodeConfig().episodes == EpisodeLinkConfig()


@pytest.mark.parametrize('values, rule', [
    ({'robots': [{'resource': 'a b'}]}, r"rollouts.robots\[0\].resource 'a b' must be a Ray custom resource name"),
    ({'robots': [{'resource': 'arm1'}, {'resource': 'CPU'}]},
     r"rollouts.robots\[1\].resource 'CPU' must be a custom resource, not one of Ray's own"),
    ({'robots': [{'resource': 'arm1', 'ros_domain_id': 233}]},
     r'rollouts.robots\[0\].ros_domain_id \(233\) must be -1 \(the Ray node\'s ROS_DOMAIN_ID\) or 0-232'),
    ({'robots': [{'resource': 'arm1', 'ros_domain_id': -2}]}, r'rollouts.robots\[0\].ros_domain_id \(-2\) must be'),
    ({'robots': [{'resource': 'arm1', 'namespace': '/arm 1'}]},
     r"rollouts.robots\[0\].namespace '/arm 1' must be '' or a ROS namespace"),
    ({'robots': [{'resource': 'arm1', 'ros_domain_id': 'one'}]},
     r"rollouts.robots\[0\].ros_domain_id must be int, got 'one'"),
    ({'robots': [{'resorce': 'arm1'}]}, r"unknown config key 'rollouts.robots\[0\].resorce' \(did you mean 'resource'"),
    ({'robots': [{'namespace': '/arm1'}]}, r"rollouts.robots\[0\].resource '' must be a Ray custom resource name"),
    ({'robots': [{'resource': 'arm1'}, {'resource': 'arm1', 'ros_domain_id': 3}]},
     r"rollouts.robots\[1\].resource 'arm1' is also rollouts.robots\[0\]'s: each robot needs a resource of its own"),
    ({'robots': {'resource': 'arm1'}}, 'rollouts.robots must be a list'),
    ({'robot_run_dir': 'runs/robots'}, "rollouts.robot_run_dir 'runs/robots' must be an absolute path"),
    ({'episodes': {'reset': 'person'}}, r"rollouts.episodes.reset 'person' must be one of \['service', 'operator'\]"),
    ({'engine': 'local'}, "rollouts.robots needs rollouts.engine 'ray' \\(not 'local'\\)"),
    ({'node_resource': 'sim'}, r"rollouts.node_resource \('sim'\) places simulator workers"),
])
def test_robot_entries_refuse_bad_values_naming_the_key_the_value_and_the_rule(values, rule):
    values = {'engine': 'ray', 'robots': [{'resource': 'arm1'}], **values}
    with pytest.raises(ConfigError, match=rule):
        rollouts(values)


def test_each_robot_worker_takes_its_whole_resource_on_the_one_node_that_offers_it():
    robots = (RobotWorkerConfig('arm1'), RobotWorkerConfig('arm2', 5))
    assert robot_actor_options(robots[1], 0.5) == {'num_cpus': 0.5, 'resources': {'arm2': 1}}
    node = lambda alive=True, **res: {'Alive': alive, 'Resources': {'CPU': 2.0, **res}}   # noqa: E731
    assert missing_robots([node(), node(arm1=1.0), node(arm2=1.0)], robots) == []
    assert missing_robots([node(arm1=1.0, arm2=1.0)], robots) == []   # two simulated robots on one machine
    [lost] = missing_robots([node(arm1=1.0), node(False, arm2=1.0)], robots)
    assert lost.startswith("no node of the Ray cluster offers the resource 'arm2' (rollouts.robots[1])")
    assert "ray start --address=HEAD:PORT --resources='{\"arm2\": 1}'" in lost
    [twice] = missing_robots([node(arm1=1.0), node(arm1=1.0), node(arm2=1.0)], robots)
    assert twice.startswith("2 nodes of the Ray cluster offer the resource 'arm1'")


def test_robot_run_dir_defaults_to_the_learners_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert robot_run_dir('', 'runs/p') == str(tmp_path / 'runs' / 'p' / 'robots')
    assert robot_run_dir('/data/robots', 'runs/p') == '/data/robots'
    with pytest.raises(ValueError, match='set rollouts.robot_run_dir'):
        robot_run_dir('', None)


class _Ref:
    """A finished call of the stand-in Ray: its value, or the error it raises."""

    def __init__(self, call):
        try:
            self.value, self.error = call(), None
        except Exception as err:   # noqa: BLE001 (raised again by get, as Ray does)
            self.value, self.error = None, err


class _Method:
    def __init__(self, call):
        self.call = call

    def remote(self, *args):
        return _Ref(lambda: self.call(*args))


class _Actor:
    """A stand-in robot worker: rolls out each job as '<resource>:<seed>', one job a call."""

    def __init__(self, fake, cls, options, args):
        self.cls, self.options, self.args, self.dead = cls, options, args, False
        self.resource, self.calls = args[1].resource, []
        self.node = _Method(lambda: f'node-of-{self.resource}')
        self.run = _Method(self._run)
        fake.actors.append(self)

    def _run(self, version, weights, jobs):
        if self.dead:
            raise _FakeRay.exceptions.RayActorError('the actor died')
        self.calls.append(jobs)
        return version, [f'{self.resource}:{job.seed}' for job in jobs]


class _FakeRay(SimpleNamespace):
    """Just enough of ``ray`` for RayRolloutPool's robot branch (a running cluster of ``nodes``)."""

    exceptions = SimpleNamespace(RayActorError=type('RayActorError', (Exception,), {}))

    def __init__(self, nodes):
        super().__init__(actors=[], killed=[], _nodes=nodes)

    def is_initialized(self):
        return True

    def nodes(self):
        return self._nodes

    def remote(self, cls):
        fake = self

        class Remote:
            def options(self, **options):
                return SimpleNamespace(remote=lambda *args: _Actor(fake, cls, options, args))
        return Remote()

    def put(self, value):
        return ('object', len(value))

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if isinstance(ref, list):
            return [self.get(r) for r in ref]
        if ref.error is not None:
            raise ref.error
        return ref.value

    def kill(self, actor):
        self.killed.append(actor)


def test_the_pool_starts_one_robot_worker_per_robot_and_reruns_a_lost_robots_jobs(monkeypatch, tmp_path):
    from policytrim_ros.nodes.robot_worker import RayRobotWorker
    from policytrim_ros.training.workers import RolloutJob
    nodes = [{'Alive': True, 'Resources': {'CPU': 0.0}},
             {'Alive': True, 'Resources': {'CPU': 4.0, 'arm1': 1.0, 'arm2': 1.0}}]
    fake = _FakeRay(nodes)
    monkeypatch.setitem(sys.modules, 'ray', fake)
    config = RolloutsConfig(engine='ray', address='auto', robots=(RobotWorkerConfig('arm1', 3),
                                                                   RobotWorkerConfig('arm2', 4, '/arm2')),
                            episodes=EpisodeLinkConfig(settle_s=0.0))
    setup = RolloutSetup(model=None, env=None, safety=None, envs_per_worker=4)
    pool = open_rollouts(setup, 2, config, out_dir=str(tmp_path / 'run'))
    first, second = fake.actors
    assert pool.workers == 2 and {a.cls for a in fake.actors} == {RayRobotWorker}
    assert [a.options for a in fake.actors] == [{'num_cpus': 1.0, 'resources': {'arm1': 1}},
                                               {'num_cpus': 1.0, 'resources': {'arm2': 1}}]
    assert first.args == (setup, config.robots[0], config.episodes, f'{tmp_path}/run/robots/arm1')
    assert second.args[3] == f'{tmp_path}/run/robots/arm2'
    jobs = [RolloutJob('reach', seed, 8, noise_seed=seed) for seed in range(5)]
    out = pool.collect({'w': torch.zeros(2)}, jobs)
    assert [r.split(':')[1] for r in out] == ['0', '1', '2', '3', '4']   # in job order
    assert all(len(share) == 1 for a in fake.actors for share in a.calls)   # robots: one episode a share,
    assert first.calls and second.calls                                     # whatever envs_per_worker says
    second.dead = True   # the robot's worker is lost: its jobs run on the other robot
    assert pool.collect(None, jobs) == [f'arm1:{seed}' for seed in range(5)]
    assert pool.workers == 1
    first.dead = True
    with pytest.raises(RuntimeError, match='every rollout worker of the Ray cluster is gone'):
        pool.collect(None, jobs)
    pool.close()


def test_a_robot_whose_resource_no_node_offers_stops_the_pool_before_any_worker_starts(monkeypatch, tmp_path):
    fake = _FakeRay([{'Alive': True, 'Resources': {'CPU': 4.0, 'arm1': 1.0}}])
    monkeypatch.setitem(sys.modules, 'ray', fake)
    config = RolloutsConfig(engine='ray', address='auto', robots=(RobotWorkerConfig('arm1'), RobotWorkerConfig('arm7')))
    with pytest.raises(RuntimeError, match=r"no node of the Ray cluster offers the resource 'arm7' \(rollouts.robots\[1\]\)"):
        open_rollouts(RolloutSetup(model=None, env=None, safety=None), 0, config, out_dir=str(tmp_path))
    assert fake.actors == []


def test_the_learner_imports_the_robot_worker_without_rclpy():
    code = ('import sys\nimport policytrim_ros.nodes.robot_worker, policytrim_ros.training.ray_pool\n'
            'bad = [m for m in sys.modules if m == "rclpy" or m.startswith("rclpy.")]\nassert not bad, bad\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_robot_worker_refuses_episodes_that_ran_to_another_step_limit_than_the_learners():
    from policytrim_ros import constants as C
    from policytrim_ros.nodes.robot_worker import RayRobotWorker
    from policytrim_ros.nodes.trainer_node import RobotSideError
    worker = RayRobotWorker.__new__(RayRobotWorker)   # its checks only: no rclpy context, no robot
    worker.setup = RolloutSetup(model=None, env=None, safety=None, max_episode_steps=40)
    worker.robot = RobotWorkerConfig('arm1')
    episode = lambda steps, end: SimpleNamespace(metrics=SimpleNamespace(  # noqa: E731
        episode_id='train-1', steps=steps, end_reason=end))
    worker._check_step_limit([episode(23, C.END_SUCCESS), episode(40, C.END_MAX_STEPS)])
    for steps, end in ((150, C.END_MAX_STEPS), (30, C.END_MAX_STEPS), (41, C.END_SUCCESS)):
        with pytest.raises(RobotSideError, match=f"ran {steps} steps .*the learner's max_episode_steps is 40"):
            worker._check_step_limit([episode(steps, end)])
