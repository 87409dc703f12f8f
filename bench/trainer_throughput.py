"""Training episodes per minute: PolicyTrim's GRPO loop in process (``policytrim train``, a RolloutPool
of worker processes) against the same loop through ROS (trainer_node driving policy_node +
sim_node over DDS, optionally with recorder_node writing one bag per episode).

Every cell runs the same config (config/training/policytrim.yaml's settings on the shipped
baseline, shortened by --iterations / --groups / --group-size) on the same seeds, so the rollouts
are the same episodes; the table reports wall-clock and episodes per minute, start-up included
and excluded (the first iteration is the start-up: process start, imports, the model's warm-up),
and checks that the ROS runs' scalars equal the in-process run's.

    python bench/trainer_throughput.py [--iterations 3] [--groups 1] [--group-size 4] \
        [--out bench/results/trainer-throughput]
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from policytrim_ros import launcher
from policytrim_ros.execution.metrics import format_table, write_json
from policytrim_ros.launcher import NodeSpec

CHECKPOINT = 'package://policytrim_ros/models/bc-wrist-h32-dagger'
COLUMNS = ['path', 'workers', 'record', 'episodes', 'wall_clock_s', 'episodes_per_min',
           'steady_episodes_per_min', 'scalars_equal']


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--iterations', type=int, default=3, help='GRPO iterations per run (default 3)')
    p.add_argument('--groups', type=int, default=1, help='groups per iteration (default 1)')
    p.add_argument('--group-size', type=int, default=4, help='G, episodes per group (default 4)')
    p.add_argument('--tasks', nargs='+', default=['reach', 'push', 'pick_place'], help='embedded arm tasks')
    p.add_argument('--out', type=Path, default=Path('bench/results/trainer-throughput'))
    return p.parse_args(argv)


def config(args, out_dir: Path, workers: int) -> dict:
    return {'init': CHECKPOINT, 'tasks': list(args.tasks), 'iterations': args.iterations,
            'groups_per_iteration': args.groups, 'group_size': args.group_size, 'base_n_action_steps': 8,
            'acceptance_ratio_count': 3, 'log_std': -2.5, 'lr': 5.0e-6, 'workers': workers, 'seed': 0,
            'checkpoint_every': 1, 'out_dir': str(out_dir)}


def scalars(run: Path) -> tuple[list[tuple], list[float]]:
    """(iteration, metric, value) rows and each iteration's wall-clock end."""
    with open(run / 'scalars.csv', newline='') as f:
        rows = list(csv.reader(f))[1:]
    ends = {}
    for it, _, _, wall in rows:
        ends[int(it)] = float(wall)
    return [tuple(r[:3]) for r in rows], [ends[k] for k in sorted(ends)]


def steady_rate(ends: list[float], per_iteration: int) -> float:
    """Episodes per minute after the first iteration (the start-up)."""
    if len(ends) < 2 or ends[-1] <= ends[0]:
        return float('nan')
    return per_iteration * (len(ends) - 1) / (ends[-1] - ends[0]) * 60


def in_process(args, root: Path, workers: int) -> tuple[dict, list]:
    path = root / f'in-process-w{workers}.yaml'
    run = root / f'in-process-w{workers}'
    path.write_text(yaml.safe_dump(config(args, run, workers)))
    started = time.monotonic()
    subprocess.run([sys.executable, '-m', 'policytrim_ros.cli', 'train', '--stage', '1', '--config', str(path)],
                   check=True, capture_output=True)
    wall = time.monotonic() - started
    rows, ends = scalars(run)
    return {'path': 'in process', 'workers': workers, 'record': False, 'wall_clock_s': wall,
            'steady_episodes_per_min': steady_rate(ends, args.groups * args.group_size)}, rows


def through_ros(args, root: Path, record: bool) -> tuple[dict, list]:
    name = f'ros-record-{record}'
    path, run = root / f'{name}.yaml', root / name
    path.write_text(yaml.safe_dump(config(args, run, 0)))
    params = launcher.package_share() / 'config' / 'sim.yaml'
    specs = [NodeSpec('sim_node', [params], {}),
             NodeSpec('policy_node', [params], {'trainer.enabled': True,
                                                'episode.log_path': str(root / f'{name}.jsonl')})]
    if record:
        specs.append(NodeSpec('recorder_node', [params], {'recording.output_dir': str(run / 'bags')}))
    started = time.monotonic()
    with launcher.Launch(specs, launcher.ros_env(), log_dir=root / f'{name}-logs'):
        trainer = NodeSpec('trainer_node', [], {'run.config': str(path), 'run.stage': 1})
        subprocess.run(trainer.command(), env=launcher.ros_env(), check=True, capture_output=True, timeout=3600)
    wall = time.monotonic() - started
    rows, ends = scalars(run)
    return {'path': 'ROS (trainer_node)', 'workers': 1, 'record': record, 'wall_clock_s': wall,
            'steady_episodes_per_min': steady_rate(ends, args.groups * args.group_size)}, rows


def main(argv=None) -> int:
    args = parse_args(argv)
    episodes = args.iterations * args.groups * args.group_size
    results = []
    with tempfile.TemporaryDirectory(prefix='policytrim-throughput-') as tmp:
        root = Path(tmp)
        reference = None
        for cell in (lambda: in_process(args, root, 0), lambda: in_process(args, root, 2),
                     lambda: through_ros(args, root, False), lambda: through_ros(args, root, True)):
            row, rows = cell()
            reference = rows if reference is None else reference
            row.update(episodes=episodes, episodes_per_min=episodes / row['wall_clock_s'] * 60,
                       scalars_equal=rows == reference)
            results.append(row)
            print(f"{row['path']} workers={row['workers']} record={row['record']}: {row['wall_clock_s']:.1f}s",
                  flush=True)
    table = format_table(results, COLUMNS)
    args.out.mkdir(parents=True, exist_ok=True)
    command = 'python bench/trainer_throughput.py ' + shlex.join(sys.argv[1:] if argv is None else argv)
    write_json(args.out / 'throughput.json', {'command': command, 'machine': f'{platform.machine()}, '
                                              f'{os.cpu_count()} CPUs', 'rows': results})
    (args.out / 'throughput.md').write_text(f'# Training episodes per minute\n\n    {command}\n\n{table}\n')
    print(table)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
