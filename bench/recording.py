"""What recording costs per episode: recorder_node's CPU time and bag size, on the embedded arm
through the nodes (sim_node + policy_node + episode_runner, config/sim.yaml).

Each cell starts the nodes afresh: ``off`` without a recorder (the reference wall-clock), then
recorder_node with each ``--compression``. CPU is read from /proc (user + system) of each node
process, from after start-up (the recorder has discovered every publisher) to after the last bag
closed, divided by the episodes: the recorder's share of the robot computer, next to what the
sim and the policy use for the same episodes. Every bag is read back with read_episode_bag and
must count the steps and calls of its EpisodeStats (``verified``).

    python bench/recording.py [--backend torch|expert] [--tasks reach push pick_place] \
        [--episodes 2] [--compression none zstd] [--out bench/results/recording]
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from policytrim_ros import launcher
from policytrim_ros.data.bag import read_episode_bag
from policytrim_ros.execution.metrics import format_table, read_jsonl, write_json
from policytrim_ros.launcher import NodeSpec

COLUMNS = ['recording', 'episodes', 'success_rate', 'steps', 'inference_calls', 'wall_clock_s',
           'recorder_cpu_ms', 'policy_cpu_ms', 'sim_cpu_ms', 'bag_mb', 'bag_kb_per_step', 'verified']
LABELS = {'steps': 'steps / ep', 'inference_calls': 'calls / ep', 'wall_clock_s': 'wall s / ep',
          'recorder_cpu_ms': 'recorder CPU ms / ep', 'policy_cpu_ms': 'policy_node CPU ms / ep',
          'sim_cpu_ms': 'sim_node CPU ms / ep', 'bag_mb': 'bag MB / ep', 'bag_kb_per_step': 'bag kB / step'}
DECIMALS = {'wall_clock_s': 2, 'recorder_cpu_ms': 0, 'policy_cpu_ms': 0, 'sim_cpu_ms': 0, 'bag_mb': 2,
            'bag_kb_per_step': 1}
_TICK = os.sysconf('SC_CLK_TCK')


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--backend', choices=['torch', 'expert'], default='torch',
                   help="policy_node's backend: torch (config/sim.yaml's shipped VLA) or the scripted expert")
    p.add_argument('--tasks', nargs='+', default=['reach', 'push', 'pick_place'], help='embedded arm tasks')
    p.add_argument('--episodes', type=int, default=2, help='episodes per task and cell (default 2)')
    p.add_argument('--seed', type=int, default=1000, help='first seed of each task (default 1000)')
    p.add_argument('--compression', nargs='+', default=['none', 'zstd'], help='recorder cells (default none zstd)')
    p.add_argument('--out', type=Path, default=Path('bench/results/recording'), help='results directory')
    return p.parse_args(argv)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f'timed out after {timeout}s waiting for {what}')
        time.sleep(0.05)


def run_cell(args, compression: str | None, work: Path) -> dict:
    """Run the episodes once, with recorder_node (``compression``) or without (None)."""
    params = launcher.package_share() / 'config' / 'sim.yaml'
    log, bags = work / 'episodes.jsonl', work / 'bags'
    policy = {'episode.log_path': str(log), **({'policy.backend': 'expert', 'execution.chunk_size': 16,
                                                'execution.n_action_steps': 4} if args.backend == 'expert' else {})}
    specs = [NodeSpec('sim_node', [params]), NodeSpec('policy_node', [params], policy)]
    if compression is not None:
        specs.append(NodeSpec('recorder_node', [params], {'recording.output_dir': str(bags),
                                                          'recording.compression': compression}))
    env = launcher.ros_env()
    with launcher.Launch(specs, env, log_dir=work / 'logs') as run:
        node_log = lambda name: (work / 'logs' / f'{name}.log').read_text()   # noqa: E731
        wait_for(lambda: ' policy: H=' in node_log('policy_node'), 300, 'policy_node to be ready')
        if compression is not None:
            wait_for(lambda: all(f'{t}: 1 publisher(s)' in node_log('recorder_node')
                                 for t in ('/policytrim/chunk_stats', '/arm_controller/joint_trajectory',
                                           '/camera2/image_raw')), 120, 'the recorder to discover the nodes')
        pids = {name: p.pid for name, p in run.processes.items()}
        before = {name: cpu_s(pid) for name, pid in pids.items()}
        runner = NodeSpec('episode_runner', [params], {
            'runner.tasks': args.tasks, 'runner.episodes_per_task': args.episodes, 'runner.seed': args.seed,
            'runner.episode_timeout_s': 300.0})
        done = subprocess.run(runner.command(), env=env, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f'episode_runner failed: {done.stderr[-2000:]}')
        episodes = read_jsonl(log)
        if compression is not None:
            wait_for(lambda: all((bags / e.episode_id / 'metadata.yaml').is_file() for e in episodes), 60,
                     'the bags to close')
        after = {name: cpu_s(pid) for name, pid in pids.items()}
    n = len(episodes)
    per_episode = {name: 1000 * (after[name] - before[name]) / n for name in pids}
    row = {'recording': 'off' if compression is None else f'recorder, {compression}', 'episodes': n,
           'success_rate': float(np.mean([e.success for e in episodes])),
           'steps': float(np.mean([e.steps for e in episodes])),
           'inference_calls': float(np.mean([e.inference_calls for e in episodes])),
           'wall_clock_s': float(np.mean([e.wall_clock_s for e in episodes])),
           'recorder_cpu_ms': per_episode.get('recorder_node', 0.0),
           'policy_cpu_ms': per_episode['policy_node'], 'sim_cpu_ms': per_episode['sim_node'],
           'bag_mb': 0.0, 'bag_kb_per_step': 0.0, 'verified': '-'}
    if compression is not None:
        sizes = [sum(f.stat().st_size for f in (bags / e.episode_id).iterdir()) for e in episodes]
        ok = 0
        for e in episodes:
            read = read_episode_bag(bags / e.episode_id)
            ok += (read.steps == e.steps and len(read.calls) == e.inference_calls == len(np.unique(read.call_index)))
        row.update(bag_mb=float(np.mean(sizes)) / 1e6,
                   bag_kb_per_step=float(sum(sizes)) / 1e3 / sum(e.steps for e in episodes), verified=f'{ok}/{n}')
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / 'runs'
    rows = []
    for compression in [None, *args.compression]:
        cell = work / ('off' if compression is None else compression)
        shutil.rmtree(cell, ignore_errors=True)
        rows.append(run_cell(args, compression, cell))
        print(format_table(rows[-1:], COLUMNS, LABELS, DECIMALS), flush=True)
    meta = {'command': 'python bench/recording.py ' + shlex.join(argv if argv is not None else sys.argv[1:]),
            'backend': args.backend, 'tasks': args.tasks, 'episodes_per_task': args.episodes, 'seed': args.seed,
            'machine': f'{platform.machine()}, {os.cpu_count()} CPUs', 'python': platform.python_version()}
    write_json(args.out / 'recording.json', {**meta, 'rows': rows})
    lines = ['# Recording cost per episode (bench/recording.py)', '']
    lines += [f'- {k}: {v}' for k, v in meta.items()] + ['', format_table(rows, COLUMNS, LABELS, DECIMALS), '']
    (args.out / 'recording.md').write_text('\n'.join(lines))
    print(format_table(rows, COLUMNS, LABELS, DECIMALS))
    shutil.rmtree(work)   # the bags and logs: not results
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
