"""The work of test_ray_robots.py, run in a process of its own inside a private network namespace.

    python test/unit/ray_robots_check.py OUT_DIR

Starts two simulated robots as real processes, each a sim_node and a policy_node with
``trainer.enabled`` (robot ``arm1`` on one ROS domain, robot ``arm2`` on another and in namespace
``/arm2``), then runs one PolicyTrim Stage 1 iteration in this process, the learner, whose rollouts
are those two robots as Ray workers (``rollouts.robots``; a Ray instance of its own, which offers
both robots' resources), while ``policytrim train`` runs the same config in-process in another
process. Writes OUT_DIR/result.json: both runs' scalars, the episodes each robot kept, whether the
learner ever imported rclpy, and the network interfaces this process saw.
"""
import csv
import json
import random
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from policytrim_ros import launcher
from policytrim_ros.config import from_dict, load_yaml
from policytrim_ros.evaluation.sweep import sim_configs
from policytrim_ros.launcher import NodeSpec
from policytrim_ros.training.trainer import PolicyTrimConfig, train_policytrim

PARAMS = launcher.package_share() / 'config' / 'sim.yaml'
# test/nodes/test_trainer_node.py's run, one iteration of one group of 4: the 4 episodes go 2 to each robot
RUN = {'init': 'package://policytrim_ros/models/bc-wrist-h32-dagger', 'tasks': ['reach'], 'iterations': 1,
       'groups_per_iteration': 1, 'group_size': 4, 'base_n_action_steps': 8, 'acceptance_ratio_count': 2,
       'log_std': -2.5, 'lr': 5.0e-6, 'workers': 0, 'seed': 0, 'checkpoint_every': 1,
       'envs_per_worker': 1}   # one episode at a time, as on a robot (lockstep batches differ in the last bits)


def scalars(path: Path) -> list:
    """(iteration, metric, value) rows: everything but the wall-clock column."""
    with path.open(newline='') as f:
        return [tuple(row[:3]) for row in csv.reader(f)][1:]


def start_robot(out: Path, name: str, domain: int, namespace: str) -> list[subprocess.Popen]:
    """sim_node + policy_node (trainer.enabled) of one simulated robot, on ``domain``, in ``namespace``."""
    params = PARAMS
    if namespace:   # a params file names its nodes by their full names: /arm2/policy_node
        params = out / f'{name}.yaml'
        params.write_text(yaml.safe_dump({f'{namespace}/{node}': section
                                          for node, section in load_yaml(PARAMS).items()}))
    env = launcher.ros_env(domain)
    (out / 'logs').mkdir(exist_ok=True)
    processes = []
    policy = {'trainer.enabled': True, 'episode.log_path': str(out / f'{name}-episodes.jsonl')}   # not in the cwd
    for spec in (NodeSpec('sim_node', [params], {}), NodeSpec('policy_node', [params], policy)):
        command = spec.command() + (['-r', f'__ns:={namespace}'] if namespace else [])
        log = open(out / 'logs' / f'{name}-{spec.executable}.log', 'w')
        processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    return processes


def main(out: Path) -> None:
    result = {'interfaces': sorted(name for _, name in socket.if_nameindex())}
    domains = random.sample(range(1, 101), 2)
    robots = [{'resource': 'arm1', 'ros_domain_id': domains[0]},
              {'resource': 'arm2', 'ros_domain_id': domains[1], 'namespace': '/arm2'}]
    processes = start_robot(out, 'arm1', domains[0], '') + start_robot(out, 'arm2', domains[1], '/arm2')
    try:
        reference = out / 'in-process.yaml'
        reference.write_text(yaml.safe_dump({**RUN, 'out_dir': str(out / 'in-process')}))
        in_process = subprocess.Popen([sys.executable, '-m', 'policytrim_ros.cli', 'train', '--stage', '1',
                                       '--config', str(reference), '--params', str(PARAMS)],
                                      stdout=open(out / 'logs' / 'in-process.log', 'w'), stderr=subprocess.STDOUT)
        # the learner: `policytrim train`'s steps, in this process
        config = from_dict(PolicyTrimConfig, {**RUN, 'stage': 1, 'out_dir': str(out / 'ray'),
                                              'rollouts': {'engine': 'ray', 'robots': robots,
                                                           'episodes': {'episode_timeout_s': 60.0}}})
        env, _, safety = sim_configs(PARAMS, config.tasks)
        train_policytrim(config, env, safety, progress=False)
        result['learner_imported_rclpy'] = any(m == 'rclpy' or m.startswith('rclpy.') for m in sys.modules)
        result['in_process_returncode'] = in_process.wait(timeout=300)
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    result['scalars'] = {run: scalars(out / run / 'scalars.csv') for run in ('in-process', 'ray')}
    result['episodes'] = {robot['resource']: len(list((out / 'ray' / 'robots' / robot['resource'] / 'episodes')
                                                      .glob('*.safetensors'))) for robot in robots}
    (out / 'result.json').write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
    main(Path(sys.argv[1]))
