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
                                   'localhost only), runs episodes of each task for every h and each --compare '
                                   'policy, prints the per-episode table, the per-task summary and the speedups '
                                   'Spd (a) against the first h and Spd (b) against --best-h, and writes JSONL + '
                                   'JSON under --out.')
    p.add_argument('--tasks', nargs='+', default=['reach', 'push', 'pick_place'], help='tasks to run')
    p.add_argument('--episodes', type=int, default=10, help='episodes per task and h (default 10)')
    p.add_argument('--seed', type=int, default=1000,
                   help='seed of the first episode of each task (evaluation seeds start at 1000)')
    p.add_argument('--chunk-size', type=int, default=None,
                   help="H, actions predicted per call (default: the checkpoint's own, else the parameter "
                        "file's execution.chunk_size); each --compare policy runs at its own")
    p.add_argument('--n-action-steps', type=int, nargs='+', default=None,
                   help=f'executed lengths h to compare; the first is the reference of Spd (a) (default: '
                        f"{DEFAULT_H}, the short window results are quoted against, and --best-h)")
    p.add_argument('--best-h', type=int, default=None,
                   help="the reference of Spd (b), one of the h values: the baseline's best fixed h (default: the "
                        "parameter file's execution.n_action_steps; config/sim.yaml's 8 is the shipped baseline's, "
                        'measured by bench/horizon_curve.py)')
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
                        "PolicyTrim checkpoint's own, or to its efficiency head's choice (default: the shipped "
                        'efficiency head model, unless --backend or --checkpoint is given; --compare with no '
                        'value: none)')
    p.add_argument('--out', type=Path, default=None, help='output folder (default runs/demo-<time>)')
    p.add_argument('--episode-timeout', type=float, default=120.0, help='seconds per episode before giving up')
    p.set_defaults(func=run)


SHIPPED_HEAD = 'head=package://policytrim_ros/models/horizon-wrist-h32-dagger'
"""The demo's default comparison: the shipped baseline's VLA with the efficiency head choosing h."""
DEFAULT_H = 4
"""Spd (a)'s reference h: the short window every result here is quoted against (the paper's)."""


def _explicit_policy(args) -> dict:
    """The policy parameters given on the command line ({'backend': ..., 'checkpoint': ...})."""
    return {k: v for k, v in (('backend', args.backend), ('checkpoint', args.checkpoint)) if v}


def demo_runs(args, shown: dict, chunk_size: int, best_h: int) -> list[tuple[str, dict, int, int]]:
    """(label, policy_node parameter overrides, h, H) of each demo run, in order: the parameter
    file's (or command line's) policy at H = ``chunk_size`` with each h of --n-action-steps
    (default DEFAULT_H and ``best_h``), then each --compare policy at its own H (and, with an
    efficiency head, execution.horizon learned)."""
    from policytrim_ros.evaluation.efficiency import parse_policy_spec
    label = Path(str(shown.get('checkpoint', ''))).name or shown.get('backend', 'expert')
    policy = {f'policy.{k}': v for k, v in _explicit_policy(args).items()}
    h_values = args.n_action_steps or sorted({min(DEFAULT_H, chunk_size), min(best_h, chunk_size)})
    runs = [(label, {**policy, 'execution.chunk_size': chunk_size, 'execution.n_action_steps': h}, h, chunk_size)
            for h in h_values]
    specs = args.compare
    if specs is None:
        specs = [] if (args.backend or args.checkpoint) else [SHIPPED_HEAD]
    for spec in map(parse_policy_spec, specs):
        overrides = spec.overrides
        runs.append((spec.name, overrides, spec.n_action_steps, overrides['execution.chunk_size']))
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
    best_h = min(args.best_h or execution.n_action_steps, chunk_size)
    if args.n_action_steps and best_h not in args.n_action_steps:
        print(f'error: --best-h {best_h} must be one of --n-action-steps {args.n_action_steps}', file=sys.stderr)
        return 2
    env, domain = launcher.run_env()
    print(f'nodes run with {domain}', flush=True)
    started = time.monotonic()
    runs = []
    for label, policy, h, H in demo_runs(args, shown, chunk_size, best_h):
        learned = policy.get('execution.horizon') == 'learned'
        run_dir = out / f'{label}-{"learned" if learned else f"h{h}"}'
        checkpoint = policy.get('policy.checkpoint', shown.get('checkpoint', ''))
        what = f'h chosen per call by its efficiency head (at most {h})' if learned else f'h = {h}'
        print(f'\n=== {label} ({checkpoint or shown.get("backend", "expert")}), {what} of H = {H}: '
              f'{len(args.tasks)} tasks x {args.episodes} episodes (node logs: {run_dir / "logs"}) ===', flush=True)
        episodes = run_ros_episodes(params, policy, args.tasks, args.episodes, args.seed, run_dir, env,
                                    args.episode_timeout)
        runs.append({'policy': label, 'checkpoint': checkpoint, C.N_ACTION_STEPS: 'learned' if learned else h,
                     C.CHUNK_SIZE: H, 'summary': M.summarize_by_task(episodes)})
    rows = []
    default = runs[0]['summary']
    best = next(r for r in runs if r[C.N_ACTION_STEPS] == best_h)['summary']   # a baseline run: best_h is one of its h
    for task in default:
        for run in runs:
            s = dict(run['summary'][task])
            s[C.N_ACTION_STEPS] = run[C.N_ACTION_STEPS]
            s['spd_default'] = M.speedup(default[task][C.INFERENCE_CALLS], s[C.INFERENCE_CALLS])
            s['spd_best'] = M.speedup(best[task][C.INFERENCE_CALLS], s[C.INFERENCE_CALLS])
            rows.append({'task': task, 'policy': run['policy'], **s})
    print(f"\n=== side by side (Spd (a) = inference calls of {runs[0]['policy']} at h = {runs[0][C.N_ACTION_STEPS]}, "
          f'Spd (b) = at h = {best_h}, each / inference calls of the row) ===')
    print(M.format_table(rows, ['task', 'policy', C.N_ACTION_STEPS, C.CHUNK_SIZE, C.CHUNK_UTILIZATION, 'episodes',
                                C.SUCCESS_RATE, C.STEPS, C.INFERENCE_CALLS, 'spd_default', 'spd_best',
                                C.WALL_CLOCK_S],
                         {'spd_default': f'Spd (a) vs h={runs[0][C.N_ACTION_STEPS]}', 'spd_best': f'Spd (b) vs h={best_h}'},
                         {'spd_default': 2, 'spd_best': 2}))
    M.write_json(out / 'summary.json', {'reference': {'policy': runs[0]['policy'], C.N_ACTION_STEPS: runs[0][C.N_ACTION_STEPS]},
                                        'best_h': best_h, 'runs': runs})
    print(f'\nwrote {out}/summary.json and {out}/*/episodes.jsonl in {time.monotonic() - started:.0f} s')
    return 0
