"""The success-vs-calls curve: the baseline and the PolicyTrim model at every fixed h of a set, the
efficiency head (``execution.horizon: learned``) and replan-on-divergence, on the same seeds.

Each cell runs ``--episodes`` episodes per task (seeds ``--seed`` on, chunk means), reports SR
with its 95 % Wilson interval, mean steps and inference calls of the successful episodes, Spd (a)
against the baseline at ``--default-h`` and Spd (b) against the baseline's best fixed h (of the
set, the fewest calls within ``--tolerance`` of its best SR), per task and pooled. With
``--ros-episodes`` the baseline at its pooled best h and the head also run through sim_node +
policy_node. Writes curve.json, curve.md and curve.png into --out.

    python bench/horizon_curve.py --head package://policytrim_ros/models/horizon-wrist-h32-dagger \\
        --episodes 100 --ros-episodes 10 --out bench/results/horizon-curve-wrist-h32-dagger
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from policytrim_ros import constants as C
from policytrim_ros import launcher
from policytrim_ros.envs.factory import suite_joint_names, task_suite
from policytrim_ros.evaluation import efficiency as E
from policytrim_ros.evaluation.sweep import checkpoint_sweep
from policytrim_ros.execution.metrics import format_table, summarize, write_json
from policytrim_ros.policy.factory import checkpoint_chunk_size

BASELINE = 'package://policytrim_ros/models/bc-wrist-h32-dagger'
POLICYTRIM = 'package://policytrim_ros/models/policytrim-wrist-h32-dagger'
HEAD, DIVERGENCE = 'learned', 'divergence'


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--baseline', default=BASELINE, help=f'baseline checkpoint (default {BASELINE})')
    p.add_argument('--policytrim', default=POLICYTRIM,
                   help=f"PolicyTrim checkpoint swept like the baseline ('' to skip; default {POLICYTRIM})")
    p.add_argument('--head', required=True, help='checkpoint with an efficiency head (policytrim train-horizon)')
    p.add_argument('--horizons', type=int, nargs='+', default=[4, 8, 16, 24, 32], help='the fixed h of the curve')
    p.add_argument('--default-h', type=int, default=4, help="Spd (a)'s reference h of the baseline (default 4)")
    p.add_argument('--divergence-threshold', type=float, default=0.008,
                   help='replan-on-divergence: |measured - planned| per arm joint, rad (0 = skip the cell); '
                        'the gripper is not watched')
    p.add_argument('--divergence-min-steps', type=int, default=8, help='steps a divergence window always runs')
    p.add_argument('--tasks', nargs='+', default=['reach', 'push', 'pick_place'])
    p.add_argument('--episodes', type=int, default=100, help='episodes per task and cell (default 100)')
    p.add_argument('--seed', type=int, default=1000, help='first seed of each task (evaluation seeds: 1000 on)')
    p.add_argument('--tolerance', type=float, default=0.02, help='SR tolerance of the best fixed h (default 0.02)')
    p.add_argument('--ros-episodes', type=int, default=10,
                   help='episodes per task of the baseline at its best h and of the head through the ROS nodes')
    p.add_argument('--workers', type=int, default=2, help='worker processes of the core loop (default 2)')
    p.add_argument('--params', type=Path, default=None, help='ROS parameter file (default config/sim.yaml)')
    p.add_argument('--out', type=Path, default=None,
                   help='output folder (default bench/results/horizon-curve-<head checkpoint name>)')
    args = p.parse_args(argv)
    if args.default_h not in args.horizons:
        p.error(f'--default-h {args.default_h} must be one of --horizons {args.horizons}')
    suite = task_suite(args.tasks)
    if suite == 'metaworld':
        args.divergence_threshold, args.ros_episodes = 0.0, 0   # hand deltas, not joint targets; no sim_node
    args.out = args.out or Path('bench/results') / f'horizon-curve-{E.checkpoint_name(args.head)}'
    return args


def sweep(args, params: Path, checkpoint: str, horizons, **execution) -> dict:
    return checkpoint_sweep(checkpoint, params, args.tasks, horizons, args.episodes, args.seed, args.workers,
                            **execution)


def ros_row(args, params: Path, spec: E.PolicySpec) -> dict:
    """The pooled row of ``spec`` run through sim_node + policy_node."""
    from policytrim_ros.evaluation.ros import run_ros_episodes
    episodes = run_ros_episodes(params, spec.overrides, args.tasks, args.ros_episodes, args.seed,
                                args.out / 'ros' / spec.name, launcher.run_env()[0])
    s = summarize(episodes)
    low, high = E.wilson_interval(sum(e.success for e in episodes), len(episodes))
    label = str(spec.n_action_steps) if spec.horizon == 'fixed' else spec.horizon
    return {'task': 'all', 'policy': spec.name, 'horizon': label, **s, E.SR_LOW: low, E.SR_HIGH: high}


def plot(rows: list[dict], path: Path, title: str) -> None:
    """SR (with its 95 % interval) against inference calls, one panel per task and the pool; each
    policy's fixed h joined by a line, the adaptive cells as single points."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    tasks = list(dict.fromkeys(r['task'] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        task_rows = [r for r in rows if r['task'] == task]
        for i, policy in enumerate(dict.fromkeys(r['policy'] for r in task_rows)):
            cells = [r for r in task_rows if r['policy'] == policy]
            x = [r[C.INFERENCE_CALLS] for r in cells]
            y = [r[C.SUCCESS_RATE] for r in cells]
            err = [[max(0.0, r[C.SUCCESS_RATE] - r[E.SR_LOW]) for r in cells],     # 0, not -1e-16, at SR 1
                   [max(0.0, r[E.SR_HIGH] - r[C.SUCCESS_RATE]) for r in cells]]
            fixed = all(r['horizon'].isdigit() for r in cells)
            ax.errorbar(x, y, yerr=err, fmt='o-' if fixed else 's', color=f'C{i}', capsize=2, ms=4, lw=1,
                        label=policy)
            if fixed:
                for r in cells:
                    ax.annotate(f"h={r['horizon']}", (r[C.INFERENCE_CALLS], r[C.SUCCESS_RATE]), fontsize=6,
                                xytext=(3, -8), textcoords='offset points')
        ax.set_xscale('log')
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([1, 2, 4, 8, 16, 32]))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_title(task, fontsize=9)
        ax.set_xlabel('inference calls per successful episode')
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel('success rate (95 % Wilson)')
    axes[0][-1].legend(fontsize=7, loc='lower right')
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    params = launcher.params_file(args.params)
    args.out.mkdir(parents=True, exist_ok=True)
    cells = {}
    policies = [('baseline', args.baseline)] + ([('policytrim', args.policytrim)] if args.policytrim else [])
    for name, checkpoint in policies:
        print(f'{name}: {checkpoint} at h = {args.horizons}', flush=True)
        for h, episodes in sweep(args, params, checkpoint, args.horizons).items():
            cells[(name, str(h))] = episodes
    chunk_size = checkpoint_chunk_size(args.head)
    print(f'efficiency head: {args.head}', flush=True)
    cells[('efficiency head', HEAD)] = sweep(args, params, args.head, [chunk_size], horizon=HEAD)[chunk_size]
    if args.divergence_threshold > 0:
        threshold = tuple(0.0 if n == 'gripper' else args.divergence_threshold
                          for n in suite_joint_names(task_suite(args.tasks)))
        print(f'replan on divergence: {args.baseline}, windows up to {chunk_size}, threshold {threshold}', flush=True)
        cells[('baseline, replan on divergence', DIVERGENCE)] = sweep(
            args, params, args.baseline, [chunk_size], horizon=DIVERGENCE, replan_threshold=threshold,
            replan_min_steps=args.divergence_min_steps)[chunk_size]
    rows = E.curve_rows(cells, 'baseline', str(args.default_h), args.tolerance)
    ros_rows = []
    if args.ros_episodes:
        best_h = next(r['best_h'] for r in rows if r['task'] == 'all')
        for spec in (E.PolicySpec('baseline', args.baseline, best_h),
                     E.PolicySpec('efficiency-head', args.head, chunk_size, HEAD)):
            print(f'ROS nodes: {spec.name} ({spec.horizon}, h = {spec.n_action_steps}), {args.ros_episodes} '
                  'episodes per task', flush=True)
            ros_rows.append(ros_row(args, params, spec))
    meta = {'baseline': args.baseline, 'policytrim': args.policytrim, 'head': args.head, 'horizons': args.horizons,
            'default_h': args.default_h, 'divergence_threshold': args.divergence_threshold,
            'divergence_min_steps': args.divergence_min_steps, 'episodes_per_task': args.episodes,
            'seed': args.seed, 'best_h_tolerance': args.tolerance, 'ros_episodes_per_task': args.ros_episodes,
            'params': str(params), 'machine': f'{platform.machine()}, workers {args.workers}',
            'total_wall_clock_s': round(time.monotonic() - started, 1)}
    write_json(args.out / 'curve.json', {**meta, 'rows': rows, 'ros_rows': ros_rows})
    lines = ['# Success vs inference calls: every fixed h, the efficiency head, replan on divergence', '']
    lines += [f'- {k}: {v}' for k, v in meta.items()] + ['']
    for task in dict.fromkeys(r['task'] for r in rows):
        lines += [f'## {task}', '', format_table([r for r in rows if r['task'] == task], E.CURVE_COLUMNS,
                                                E.CURVE_LABELS, E.CURVE_DECIMALS), '']
    if ros_rows:
        lines += ['## Through the ROS nodes (sim_node + policy_node, all tasks)', '',
                  format_table(ros_rows, E.CURVE_COLUMNS[:10], E.CURVE_LABELS, E.CURVE_DECIMALS), '']
    (args.out / 'curve.md').write_text('\n'.join(lines))
    plot(rows, args.out / 'curve.png', f'{args.episodes} episodes per task and cell, seeds {args.seed} on')
    print('\n'.join(lines))
    print(f'wrote {args.out}/curve.json, curve.md and curve.png')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
