"""The ``policytrim`` command.

    policytrim demo    run the embedded sim + policy node over ROS 2 for each executed length h and
                       compare inference calls (the README's main job)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from policytrim_ros import constants as C
from policytrim_ros import launcher
from policytrim_ros.execution import metrics as M


def _demo_parser(sub) -> None:
    p = sub.add_parser('demo', help='embedded sim + policy node over ROS 2; compare executed lengths h',
                       description='Starts sim_node and policy_node as ROS 2 processes (Fast DDS, '
                                   'localhost only), runs episodes of each task for every h, prints the '
                                   'per-episode table, the per-task summary and the speedup Spd of each h '
                                   'against the first one, and writes JSONL + JSON under --out.')
    p.add_argument('--tasks', nargs='+', default=['reach', 'push', 'pick_place'], help='tasks to run')
    p.add_argument('--episodes', type=int, default=10, help='episodes per task and h (default 10)')
    p.add_argument('--seed', type=int, default=0, help='seed of the first episode of each task')
    p.add_argument('--chunk-size', type=int, default=16, help='H, actions predicted per call (default 16)')
    p.add_argument('--n-action-steps', type=int, nargs='+', default=None,
                   help='executed lengths h to compare; the first is the baseline (default: H/4 and H)')
    p.add_argument('--params', type=Path, default=None,
                   help='ROS parameter file (default: the installed config/sim.yaml)')
    p.add_argument('--out', type=Path, default=None, help='output folder (default runs/demo-<time>)')
    p.add_argument('--episode-timeout', type=float, default=120.0, help='seconds per episode before giving up')
    p.set_defaults(func=demo)


def _run_once(args, h: int, run_dir: Path, env: dict) -> dict:
    """One sim + policy node session at executed length h; returns the runner's summary."""
    params = args.params or launcher.package_share() / 'config' / 'sim.yaml'
    log = run_dir / 'episodes.jsonl'
    log.unlink(missing_ok=True)
    nodes = [
        launcher.NodeSpec('sim_node', [params]),
        launcher.NodeSpec('policy_node', [params], {
            'execution.chunk_size': args.chunk_size, 'execution.n_action_steps': h,
            'episode.log_path': str(log)}),
    ]
    runner = launcher.NodeSpec('episode_runner', [params], {
        'runner.tasks': list(args.tasks), 'runner.episodes_per_task': args.episodes,
        'runner.seed': args.seed, 'runner.episode_timeout_s': args.episode_timeout,
        'runner.summary_path': str(run_dir / 'summary.json')})
    print(f'\n=== h = {h} of H = {args.chunk_size}: {len(args.tasks)} tasks x {args.episodes} episodes '
          f'(node logs: {run_dir / "logs"}) ===', flush=True)
    with launcher.Launch(nodes, env, log_dir=run_dir / 'logs') as launch:
        code = subprocess.run(runner.command(), env=env).returncode
        for name, proc in launch.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f'{name} exited early with code {proc.returncode}; see {run_dir / "logs"}')
    if code != 0:
        raise RuntimeError(f'episode_runner failed with exit code {code}; see {run_dir / "logs"}')
    return M.summarize_by_task(M.read_jsonl(log))


def demo(args) -> int:
    h_values = args.n_action_steps or [max(1, args.chunk_size // 4), args.chunk_size]
    for h in h_values:
        if not 1 <= h <= args.chunk_size:
            print(f'error: --n-action-steps {h} must be in [1, chunk size {args.chunk_size}]', file=sys.stderr)
            return 2
    out = args.out or Path('runs') / time.strftime('demo-%Y%m%d-%H%M%S')
    env = launcher.ros_env(launcher.random_domain_id())
    started = time.monotonic()
    runs = []
    for h in h_values:
        summary = _run_once(args, h, out / f'h{h}', env)
        runs.append({C.N_ACTION_STEPS: h, C.CHUNK_SIZE: args.chunk_size, 'summary': summary})
    rows = []
    base = runs[0]['summary']
    for run in runs:
        for task, s in run['summary'].items():
            spd = M.speedup(base.get(task, {}).get(C.INFERENCE_CALLS, float('nan')), s[C.INFERENCE_CALLS])
            s[C.SPEEDUP] = spd
            rows.append({'task': task, **s})
    print(f'\n=== comparison (Spd = inference calls at h = {h_values[0]} / inference calls at h) ===')
    print(M.format_table(rows, ['task', C.N_ACTION_STEPS, C.CHUNK_SIZE, C.CHUNK_UTILIZATION, 'episodes',
                                C.SUCCESS_RATE, C.STEPS, C.INFERENCE_CALLS, C.SPEEDUP, C.WALL_CLOCK_S]))
    M.write_json(out / 'summary.json', {'baseline_n_action_steps': h_values[0], 'runs': runs})
    print(f'\nwrote {out}/summary.json and {out}/h*/episodes.jsonl in {time.monotonic() - started:.0f} s')
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='policytrim', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    _demo_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (RuntimeError, FileNotFoundError, ValueError) as err:
        print(f'policytrim {args.command}: error: {err}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    raise SystemExit(main())
