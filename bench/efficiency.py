"""Baseline vs PolicyTrim on the same episodes: SR, steps S, h, H, utilization, inference calls,
Spd (a) against the baseline's default h and (b) against its best fixed h, wall-clock per episode
on the core loop and, for the embedded tasks, through the ROS nodes.

The baseline is swept over ``--baseline-h`` (its best fixed h comes from that sweep); each
``--method NAME=CHECKPOINT@h`` runs at its h on every task, each ``--ablation NAME=CHECKPOINT@h`` on
``--ablation-task`` only. Every policy sees the same initial states (seeds ``--seed`` on), with
chunk means (no sampling). Writes efficiency.json, efficiency.md and efficiency.png into --out, by
default bench/results/efficiency-<baseline>-vs-<methods> (the checkpoints' names); a folder that
holds another comparison's results is refused, so one pair's results never overwrite another's.

    python bench/efficiency.py --method policytrim=package://policytrim_ros/models/policytrim-wrist-h32-dagger \\
        --episodes 100 --ros-episodes 10 --out bench/results/efficiency-wrist-h32-dagger
    python bench/efficiency.py --baseline package://policytrim_ros/models/bc-wrist-more-ft \\
        --method policytrim=models/policytrim-wrist@16 --out bench/results/efficiency-wrist
    python bench/efficiency.py --tasks reach-v3 push-v3 pick-place-v3 --baseline CHECKPOINT \
        --method policytrim=CHECKPOINT --ablation-task push-v3 --out bench/results/efficiency-metaworld
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from policytrim_ros import constants as C
from policytrim_ros import launcher
from policytrim_ros.envs.factory import task_suite
from policytrim_ros.evaluation import efficiency as E
from policytrim_ros.evaluation.sweep import checkpoint_sweep
from policytrim_ros.execution.metrics import format_table, summarize_by_task, write_json
from policytrim_ros.policy.factory import checkpoint_chunk_size

BASELINE = 'package://policytrim_ros/models/bc-wrist-h32-dagger'
RESULTS = Path('bench/results')


def policy_spec(text: str) -> E.PolicySpec:
    try:
        return E.parse_policy_spec(text)
    except (ValueError, OSError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--baseline', default=BASELINE, help=f'baseline checkpoint (default {BASELINE})')
    p.add_argument('--baseline-h', type=int, nargs='+', default=None,
                   help="the baseline sweep (default 1, 2, 4, ... up to and with the baseline's H)")
    p.add_argument('--default-h', type=int, default=4,
                   help="Spd (a)'s reference: the baseline's default h (default 4, the short window every result "
                        "here is quoted against; config/sim.yaml runs the shipped baseline at 8)")
    p.add_argument('--method', type=policy_spec, action='append', default=[], metavar='NAME=CHECKPOINT[@h]',
                   help='a post-trained policy, run on every task (repeatable); h defaults to a Stage 2 '
                        "checkpoint's own")
    p.add_argument('--ablation', type=policy_spec, action='append', default=[], metavar='NAME=CHECKPOINT@h',
                   help='an ablation row, run on --ablation-task only (repeatable)')
    p.add_argument('--ablation-task', default='push', help='the task of the ablation rows (default push)')
    p.add_argument('--tasks', nargs='+', default=['reach', 'push', 'pick_place'],
                   help="tasks of one robot: the embedded arm's (default) or Meta-World's (reach-v3 push-v3 "
                        'pick-place-v3; no ROS rows: the nodes run the embedded arm)')
    p.add_argument('--episodes', type=int, default=100, help='episodes per task and policy (default 100)')
    p.add_argument('--seed', type=int, default=1000, help='first seed of each task (evaluation seeds: 1000 on)')
    p.add_argument('--tolerance', type=float, default=0.02, help='SR tolerance of the best fixed h (default 0.02)')
    p.add_argument('--ros-episodes', type=int, default=10,
                   help='episodes per task through the ROS nodes for the ROS wall-clock (0 = skip)')
    p.add_argument('--workers', type=int, default=2, help='worker processes of the core loop (default 2)')
    p.add_argument('--params', type=Path, default=None, help='ROS parameter file (default config/sim.yaml)')
    p.add_argument('--out', type=Path, default=None,
                   help='output folder (default bench/results/efficiency-<baseline>-vs-<methods>, from the '
                        'checkpoints\' names); one that holds another comparison\'s results is refused')
    args = p.parse_args(argv)
    if args.baseline_h is None:
        chunk_size = checkpoint_chunk_size(args.baseline)
        args.baseline_h = sorted({min(2 ** i, chunk_size) for i in range(chunk_size.bit_length() + 1)})
    if args.default_h not in args.baseline_h:
        p.error(f'--default-h {args.default_h} must be one of --baseline-h {args.baseline_h}')
    if not args.method:
        p.error('give at least one --method NAME=CHECKPOINT@h')
    if args.out is None:
        args.out = RESULTS / f'efficiency-{E.comparison_name(args.baseline, args.method)}'
    other = E.other_comparison_in(args.out, args.baseline, args.method)
    if other:
        p.error(f'--out {args.out} holds the results of another comparison ({other}); '
                'pick another --out (or leave it out: the default is named after the checkpoints)')
    try:
        suite = task_suite(args.tasks)
    except ValueError as err:   # unknown or mixed tasks
        p.error(str(err))
    if args.ablation and args.ablation_task not in args.tasks:
        p.error(f'--ablation-task {args.ablation_task} must be one of --tasks {args.tasks}')
    if suite == 'metaworld' and args.ros_episodes:
        print('Meta-World tasks: no ROS wall-clock rows (sim_node runs the embedded arm)')
        args.ros_episodes = 0
    return args


def core_sweep(args, checkpoint: str, horizons: list[int], tasks: list[str], episodes: int, params: Path,
               horizon: str = 'fixed') -> dict:
    return checkpoint_sweep(checkpoint, params, tasks, horizons, episodes, args.seed, args.workers, horizon=horizon)


def spec_sweep(args, spec: E.PolicySpec, tasks: list[str], params: Path) -> list:
    """The episodes of ``spec`` on ``tasks``, each task at its h."""
    episodes = []
    for h, group in spec.horizon_groups(tasks).items():
        episodes += core_sweep(args, spec.checkpoint, [h], group, args.episodes, params, spec.horizon)[h]
    return episodes


def describe(spec: E.PolicySpec, tasks: list[str]) -> str:
    groups = spec.horizon_groups(tasks)
    if len(groups) == 1:
        return f'h = {next(iter(groups))} ({spec.horizon})'
    return 'h per task: ' + ', '.join(f'{t} {h}' for h, ts in groups.items() for t in ts)


def ros_wall_clock(args, params: Path, spec: E.PolicySpec, tasks: list[str], out: Path) -> dict[str, float]:
    """{task: mean wall-clock s per episode, 'all': ...} through sim_node + policy_node (one
    policy_node run per h the tasks run at)."""
    from policytrim_ros.evaluation.ros import run_ros_episodes
    episodes, groups = [], spec.horizon_groups(tasks)
    for h, group in groups.items():
        episodes += run_ros_episodes(params, spec.overrides_at(h), group, args.ros_episodes, args.seed,
                                     out if len(groups) == 1 else out / f'h{h}', launcher.run_env()[0])
    return {task: s[C.WALL_CLOCK_S] for task, s in summarize_by_task(episodes).items()}


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Inference calls per task and policy (bars), SR written above each bar."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    tasks = list(dict.fromkeys(r['task'] for r in rows))
    policies = list(dict.fromkeys(r['policy'] for r in rows))
    fig, ax = plt.subplots(figsize=(2.2 + 2.0 * len(tasks), 4.2))
    width = 0.8 / len(policies)
    for i, policy in enumerate(policies):
        labelled = False
        for j, task in enumerate(tasks):
            row = next((r for r in rows if r['task'] == task and r['policy'] == policy), None)
            if row is None:
                continue
            x = j + (i - (len(policies) - 1) / 2) * width
            bar = ax.bar(x, row[C.INFERENCE_CALLS], width, color=f'C{i}', label=None if labelled else policy)
            labelled = True
            ax.text(x, bar[0].get_height(), f"{row[C.SUCCESS_RATE]:.2f}", ha='center', va='bottom', fontsize=7)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel('inference calls per successful episode')
    ax.set_title(f'{title}\n(SR above each bar)', fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    params = launcher.params_file(args.params)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f'baseline sweep: {args.baseline}, h = {args.baseline_h}', flush=True)
    baseline = core_sweep(args, args.baseline, args.baseline_h, args.tasks, args.episodes, params)
    methods = {}
    for m in args.method:
        print(f'{m.name}: {m.checkpoint} at {describe(m, args.tasks)}', flush=True)
        methods[m.name] = spec_sweep(args, m, args.tasks, params)
    ablations = {}
    for m in args.ablation:
        print(f'ablation {m.name}: {m.checkpoint} at {describe(m, [args.ablation_task])} on {args.ablation_task}',
              flush=True)
        ablations[m.name] = spec_sweep(args, m, [args.ablation_task], params)
    rows = E.comparison_rows(baseline, args.default_h, methods, args.tolerance)
    ablation_rows = [r for r in E.comparison_rows(baseline, args.default_h, ablations, args.tolerance)
                     if r['task'] == args.ablation_task] if ablations else []
    if args.ros_episodes:
        timed = [E.PolicySpec('baseline (default h)', args.baseline, args.default_h)] + args.method
        for spec in timed:
            name = spec.name
            print(f'ROS nodes: {name} at {describe(spec, args.tasks)}, {args.ros_episodes} episodes per task',
                  flush=True)
            clock = ros_wall_clock(args, params, spec, args.tasks, args.out / 'ros' / name.split()[0])
            for row in rows:
                if row['policy'] == name:
                    row[E.ROS_WALL_CLOCK_S] = clock.get(row['task'], float('nan'))
    meta = {'baseline': args.baseline, 'baseline_sweep_h': args.baseline_h, 'default_h': args.default_h,
            'methods': {m.name: {'checkpoint': m.checkpoint, 'n_action_steps': m.n_action_steps, 'horizon': m.horizon,
                                 'task_n_action_steps': dict(m.task_n_action_steps)} for m in args.method},
            'ablations': {m.name: {'checkpoint': m.checkpoint, 'n_action_steps': m.n_action_steps}
                          for m in args.ablation},
            'ablation_task': args.ablation_task if ablations else None,
            'episodes_per_task': args.episodes, 'seed': args.seed,
            'best_h_tolerance': args.tolerance, 'ros_episodes_per_task': args.ros_episodes, 'params': str(params),
            'machine': f'{platform.machine()}, {platform.processor() or "cpu"}, workers {args.workers}',
            'total_wall_clock_s': round(time.monotonic() - started, 1)}
    write_json(args.out / 'efficiency.json', {**meta, 'rows': rows, 'ablation_rows': ablation_rows})
    table = format_table(rows, E.COLUMNS, E.LABELS, E.DECIMALS)
    lines = ['# Efficiency: baseline vs post-trained policies (core loop; ROS wall-clock through the nodes)', '']
    lines += [f'- {k}: {v}' for k, v in meta.items()] + ['', table, '']
    if ablation_rows:
        lines += [f'## Ablations on {args.ablation_task}', '',
                  format_table(ablation_rows, E.COLUMNS[:-1], E.LABELS, E.DECIMALS), '']
    (args.out / 'efficiency.md').write_text('\n'.join(lines))
    plot(rows + ablation_rows, args.out / 'efficiency.png', f'{args.episodes} episodes per task and policy')
    print('\n'.join(lines))
    print(f'wrote {args.out}/efficiency.json, efficiency.md and efficiency.png')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
