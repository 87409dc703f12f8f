"""Meta-World's scripted experts, task by task: success rate and the steps their successes take.

Runs each task's own expert (``MetaWorldExpertPolicy``, closed loop: H = h = 1) in ``MetaWorldEnv``
on ``--episodes`` seeds from ``--seed``, with a ``--max-steps`` cap, in this process, and reports per
task: SR (within the cap, and within the task's step limit: ``--default-limit`` or the task's own),
mean / 95th-percentile (nearest rank) / max steps of the successful episodes, how many successes
took more than ``--default-limit`` steps, and the step limit the rule of
``robots.metaworld_tasks.MetaWorldTask.step_limit`` gives (the smallest multiple of 50 at or above
the 95th percentile, where that exceeds the default) next to the one the table has. Prints a
markdown table and writes it as JSON to ``--out``.

    python bench/metaworld_experts.py --seed 0 --episodes 50 --max-steps 500 \\
        --out bench/results/metaworld-experts/step-limits.json
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from policytrim_ros.envs.factory import task_step_limit
from policytrim_ros.envs.metaworld import MetaWorldEnv
from policytrim_ros.envs.metaworld_config import MetaWorldConfig, MetaWorldDisturbanceConfig
from policytrim_ros.execution.config import ExecutionConfig
from policytrim_ros.execution.episode import run_episode
from policytrim_ros.policy.metaworld_expert import MetaWorldExpertPolicy
from policytrim_ros.robots.metaworld import CONTROL_DT
from policytrim_ros.robots.metaworld_tasks import METAWORLD_TASKS, check_task


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--tasks', nargs='+', default=list(METAWORLD_TASKS), help='Meta-World tasks (default all 50)')
    p.add_argument('--seed', type=int, default=0, help='first seed (default 0: demonstration seeds)')
    p.add_argument('--episodes', type=int, default=50, help='seeds per task (default 50: every MT1 variant once)')
    p.add_argument('--max-steps', type=int, default=500, help="step cap per episode (default 500, Meta-World's own)")
    p.add_argument('--default-limit', type=int, default=150, help='the configured step limit (default 150)')
    p.add_argument('--quiet', action='store_true', help='no disturbances (default: the default MetaWorldConfig)')
    p.add_argument('--out', type=Path, default=None, help='JSON file to write (default: none)')
    args = p.parse_args(argv)
    for task in args.tasks:
        check_task(task)
    return args


def nearest_rank(values: list[int], q: float) -> int:
    """The q-quantile of ``values`` by nearest rank (a value that occurred)."""
    ordered = sorted(values)
    return ordered[math.ceil(q * len(ordered)) - 1]


def measure(task: str, env: MetaWorldEnv, args: argparse.Namespace) -> dict:
    expert = MetaWorldExpertPolicy(task, chunk_size=1)
    execution = ExecutionConfig(1, 1, CONTROL_DT, args.max_steps)
    steps = []
    for seed in range(args.seed, args.seed + args.episodes):
        metrics, _ = run_episode(env, expert, execution, task, seed)
        steps.append(metrics.steps if metrics.success else None)
    ok = [s for s in steps if s is not None]
    p95 = nearest_rank(ok, 0.95) if ok else None
    rule = 50 * math.ceil(p95 / 50) if p95 is not None and p95 > args.default_limit else None
    limit = task_step_limit(task, args.default_limit)
    return {'task': task, 'episodes': len(steps), 'success_rate': len(ok) / len(steps), 'step_limit': limit,
            'success_rate_within_limit': sum(s <= limit for s in ok) / len(steps),
            'mean_steps': round(sum(ok) / len(ok), 1) if ok else None, 'p95_steps': p95,
            'max_steps': max(ok) if ok else None, 'over_default': sum(s > args.default_limit for s in ok),
            'rule_step_limit': rule, 'table_step_limit': METAWORLD_TASKS[task].step_limit,
            'steps': steps}


def main(argv=None) -> int:
    args = parse_args(argv)
    config = MetaWorldConfig(disturbances=MetaWorldDisturbanceConfig.none()) if args.quiet else MetaWorldConfig()
    env = MetaWorldEnv(args.tasks[0], config)
    started = time.monotonic()
    rows = []
    header = ('| task | SR | SR within step limit | mean steps | p95 steps | max steps | successes > default | '
              'rule limit | table limit |\n|---|---|---|---|---|---|---|---|---|')
    print(header)
    try:
        for task in args.tasks:
            row = measure(task, env, args)
            rows.append(row)
            print(f"| {task} | {row['success_rate']:.2f} | {row['success_rate_within_limit']:.2f} | "
                  f"{row['mean_steps']} | {row['p95_steps']} | "
                  f"{row['max_steps']} | {row['over_default']} | {row['rule_step_limit'] or '-'} | "
                  f"{row['table_step_limit'] or '-'} |", flush=True)
    finally:
        env.close()
    mismatched = [r['task'] for r in rows if r['rule_step_limit'] != r['table_step_limit']]
    print(f"\n{len(rows)} tasks, {args.episodes} seeds from {args.seed}, cap {args.max_steps} steps, "
          f"{'no' if args.quiet else 'default'} disturbances, {time.monotonic() - started:.0f} s; "
          f"rule and table limits differ for: {mismatched or 'none'}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({'seed': args.seed, 'episodes': args.episodes, 'max_steps': args.max_steps,
                                        'default_limit': args.default_limit, 'quiet': args.quiet,
                                        'rows': rows}, indent=1) + '\n')
        print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
