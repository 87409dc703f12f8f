"""How far each checkpoint's first chunk target sits from the arm's joint positions, per joint.

A chunk's first target is checked against the velocity limit from the current joint positions
(``execution.safety.check_chunk``); a policy whose first step drifts past that reach has every chunk
refused (end_reason ``error``). This prints, for the initial states of the given tasks and seeds,
the mean signed offset (chunk mean's first target - joint positions) per joint and the share of
states whose offset breaks the limit, next to the limit itself:

    .venv/bin/python docs/experiments/scripts/first_step_offsets.py --checkpoint package://policytrim_ros/models/bc-wrist-h32-dagger \
        runs/policytrim-wrist-h32-dagger-stage1/checkpoints/iter_00010 --seeds 1000 1004

Writes nothing; the env and safety limits come from the ROS parameter file (default config/sim.yaml).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from policytrim_ros import launcher, resources
from policytrim_ros.envs.arm import ArmEnv
from policytrim_ros.evaluation.sweep import sim_configs
from policytrim_ros.policy.torch_policy import TorchVLAPolicy


def offsets(checkpoint: str, env: ArmEnv, tasks: list[str], seeds: range) -> np.ndarray:
    """(states, A) first target of the chunk mean minus the joint positions, one row per initial state."""
    policy = TorchVLAPolicy(resources.resolve(checkpoint))
    rows = []
    for task in tasks:
        for seed in seeds:
            observation = env.reset(task, seed, render=True)
            rows.append(policy.predict_action_chunk(observation)[0] - observation.joint_positions)
    return np.array(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--checkpoint', nargs='+', required=True, help='checkpoint folders or package:// paths')
    parser.add_argument('--tasks', nargs='+', default=['reach', 'push', 'pick_place'])
    parser.add_argument('--params', type=Path, default=None, help='ROS parameter file (default config/sim.yaml)')
    parser.add_argument('--seeds', nargs=2, type=int, default=(1000, 1004), metavar=('FIRST', 'END'),
                        help='initial-state seeds FIRST .. END-1 of every task (default 1000 1004)')
    args = parser.parse_args(argv)
    env_config, execution, safety = sim_configs(launcher.params_file(args.params))
    reach = np.asarray(safety.max_velocity) * execution.control_dt   # the farthest a first target may be
    env = ArmEnv(env_config)
    try:
        names = env.joint_names
        print(f"{'checkpoint':<48} " + ' '.join(f'{n:>8}' for n in names) + '  refused')
        print(f"{'limit per step':<48} " + ' '.join(f'{r:8.3f}' for r in reach))
        for checkpoint in args.checkpoint:
            rows = offsets(checkpoint, env, args.tasks, range(*args.seeds))
            refused = (np.abs(rows) > reach).any(axis=1).mean()
            print(f'{checkpoint[-48:]:<48} ' + ' '.join(f'{m:+8.3f}' for m in rows.mean(0)) + f'  {refused:7.0%}')
    finally:
        env.close()


if __name__ == '__main__':
    main()
