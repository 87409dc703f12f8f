"""``policytrim demo``: the embedded sim and the policy node over ROS 2, compared across executed lengths h."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from policytrim_ros import constants as C
from policytrim_ros import launcher
from policytrim_ros.config import load_yaml, ros_parameters
from policytrim_ros.evaluation.ros import run_ros_episodes
from policytrim_ros.execution import metrics as M


def add_parsers(sub) -> None:
    p = sub.add_parser('demo', help='embedded sim + policy node over ROS 2; compare executed lengths h',
                       description='Starts sim_node and policy_node as ROS 2 processes (Fast DDS, '
                                   'localhost only), runs episodes of each task for every h, prints the '
                                   'per-episode table, the per-task summary and the speedup Spd of each h '
                                   'against the first one, and writes JSONL + JSON under --out.')
    p.add_argument('--tasks', nargs='+', default=['reach', 'push', 'pick_place'], help='tasks to run')
    p.add_argument('--episodes', type=int, default=10, help='episodes per task and h (default 10)')
    p.add_argument('--seed', type=int, default=1000,
                   help='seed of the first episode of each task (evaluation seeds start at 1000)')
    p.add_argument('--chunk-size', type=int, default=None,
                   help="H, actions predicted per call (default: the checkpoint's own, else the parameter "
                        "file's execution.chunk_size); each --compare policy runs at its own")
    p.add_argument('--n-action-steps', type=int, nargs='+', default=None,
                   help="executed lengths h to compare; the first is the baseline (default: the parameter "
                        "file's execution.n_action_steps, 8, and H)")
    p.add_argument('--params', type=Path, default=None,
                   help='ROS parameter file (default: the installed config/sim.yaml)')
    p.add_argument('--backend', default=None,
                   help='policy backend: torch, onnx, expert or replay (default: the parameter file\'s, '
                        'torch with the shipped BC baseline in config/sim.yaml)')
    p.add_argument('--checkpoint', default=None,
                   help='checkpoint of a learned backend (default: the parameter file\'s, '
                        'package://policytrim_ros/models/bc-wrist-h32-dagger)')
    p.add_argument('--compare', nargs='*', default=None, metavar='NAME=CHECKPOINT[@h]',
                   help='learned policies (torch) run after the h values and shown side by side; h defaults to a '
                        "PolicyTrim checkpoint's own (default: the shipped PolicyTrim model, unless --backend or "
                        '--checkpoint is given; --compare with no value: none)')
    p.add_argument('--out', type=Path, default=None, help='output folder (default runs/demo-<time>)')
    p.add_argument('--episode-timeout', type=float, default=120.0, help='seconds per episode before giving up')
    p.set_defaults(func=run)


SHIPPED_POLICYTRIM = 'policytrim=package://policytrim_ros/models/policytrim-wrist-h32-dagger'
"""The demo's default comparison: the shipped PolicyTrim model at the h it was trained for."""


def _explicit_policy(args) -> dict:
    """The policy parameters given on the command line ({'backend': ..., 'checkpoint': ...})."""
    return {k: v for k, v in (('backend', args.backend), ('checkpoint', args.checkpoint)) if v}


def demo_runs(args, shown: dict, chunk_size: int, default_h: int) -> list[tuple[str, dict, int, int]]:
    """(label, policy_node parameter overrides, h, H) of each demo run, in order: the parameter
    file's (or command line's) policy at H = ``chunk_size`` with h = ``default_h`` (the parameter
    file's) and h = H, then each --compare policy at its own H."""
    from policytrim_ros.evaluation.efficiency import parse_policy_spec
    from policytrim_ros.policy.factory import checkpoint_chunk_size
    label = Path(str(shown.get('checkpoint', ''))).name or shown.get('backend', 'expert')
    policy = {f'policy.{k}': v for k, v in _explicit_policy(args).items()}
    h_values = args.n_action_steps or sorted({min(default_h, chunk_size), chunk_size})
    runs = [(label, policy, h, chunk_size) for h in h_values]
    specs = args.compare
    if specs is None:
        specs = [] if (args.backend or args.checkpoint) else [SHIPPED_POLICYTRIM]
    for spec in map(parse_policy_spec, specs):
        runs.append((spec.name, {'policy.backend': 'torch', 'policy.checkpoint': spec.checkpoint}, spec.n_action_steps,
                     checkpoint_chunk_size(spec.checkpoint)))
    return runs


def run(args) -> int:
    from policytrim_ros.evaluation.sweep import sim_configs
    from policytrim_ros.policy.factory import PolicyConfig, run_chunk_size
    out = args.out or Path('runs') / time.strftime('demo-%Y%m%d-%H%M%S')
    params = launcher.params_file(args.params)
    shown = {**ros_parameters(load_yaml(params), 'policy_node').get('policy', {}), **_explicit_policy(args)}
    first = PolicyConfig(shown.get('backend', 'expert'), str(shown.get('checkpoint', '')))
    execution = sim_configs(params)[1]
    chunk_size = args.chunk_size or run_chunk_size(first, execution.chunk_size)
    for h in args.n_action_steps or []:
        if not 1 <= h <= chunk_size:
            print(f'error: --n-action-steps {h} must be in [1, chunk size {chunk_size}]', file=sys.stderr)
            return 2
    env, domain = launcher.run_env()
    print(f'nodes run with {domain}', flush=True)
    started = time.monotonic()
    runs = []
    for label, policy, h, H in demo_runs(args, shown, chunk_size, execution.n_action_steps):
        run_dir = out / f'{label}-h{h}'
        checkpoint = policy.get('policy.checkpoint', shown.get('checkpoint', ''))
        print(f'\n=== {label} ({checkpoint or shown.get("backend", "expert")}), h = {h} of H = {H}: '
              f'{len(args.tasks)} tasks x {args.episodes} episodes (node logs: {run_dir / "logs"}) ===', flush=True)
        episodes = run_ros_episodes(params, {**policy, 'execution.chunk_size': H, 'execution.n_action_steps': h},
                                    args.tasks, args.episodes, args.seed, run_dir, env, args.episode_timeout)
        runs.append({'policy': label, 'checkpoint': checkpoint, C.N_ACTION_STEPS: h, C.CHUNK_SIZE: H,
                     'summary': M.summarize_by_task(episodes)})
    rows = []
    base = runs[0]['summary']
    for task in base:
        for run in runs:
            s = dict(run['summary'][task])
            s[C.SPEEDUP] = M.speedup(base[task][C.INFERENCE_CALLS], s[C.INFERENCE_CALLS])
            rows.append({'task': task, 'policy': run['policy'], **s})
    print(f"\n=== side by side (Spd = inference calls of {runs[0]['policy']} at h = {runs[0][C.N_ACTION_STEPS]} "
          '/ inference calls of the row) ===')
    print(M.format_table(rows, ['task', 'policy', C.N_ACTION_STEPS, C.CHUNK_SIZE, C.CHUNK_UTILIZATION, 'episodes',
                                C.SUCCESS_RATE, C.STEPS, C.INFERENCE_CALLS, C.SPEEDUP, C.WALL_CLOCK_S]))
    M.write_json(out / 'summary.json', {'reference': {'policy': runs[0]['policy'], C.N_ACTION_STEPS: runs[0][C.N_ACTION_STEPS]},
                                        'runs': runs})
    print(f'\nwrote {out}/summary.json and {out}/*/episodes.jsonl in {time.monotonic() - started:.0f} s')
    return 0
