"""``policytrim eval``: the forced-horizon sweep over h, without ROS (multi-process) or through the nodes."""
from __future__ import annotations

import time
from pathlib import Path

from policytrim_ros import launcher
from policytrim_ros.evaluation.ros import run_ros_episodes
from policytrim_ros.execution.config import HORIZONS


def add_parsers(sub) -> None:
    p = sub.add_parser('eval', help='forced-horizon sweep: N episodes per task for each executed length h',
                       description='Runs N episodes of each task for every h (paired seeds), reports SR, steps '
                                   'S, h, H, h/H, inference calls, Spd against --reference and wall-clock, and '
                                   'writes sweep.json, sweep.md and sweep.png under --out, plus h<h>/episodes.jsonl '
                                   "(without --ros each line has the episode's end_state, and sweep.md counts "
                                   'the failed episodes by failure mode). Tasks are the '
                                   "embedded arm's (reach push pick_place) or Meta-World's (any of its 50 v3 tasks, "
                                   'e.g. reach-v3 door-open-v3; without --ros only, in the default MetaWorldConfig '
                                   'env at its 0.0125 s step, with no joint-limit safety checks: Meta-World clips '
                                   'its actions to [-1, 1]; a task whose expert needs more steps than '
                                   'execution.max_episode_steps gets its own longer step limit).')
    p.add_argument('--backend', default='expert', help='policy backend: expert, torch, onnx (default expert)')
    p.add_argument('--checkpoint', default='', help='checkpoint directory (torch/onnx)')
    p.add_argument('--tasks', nargs='+', default=['reach', 'push', 'pick_place'],
                   help="tasks of one robot: the arm's (default reach push pick_place) or Meta-World's "
                        '(any of its 50 v3 tasks: reach-v3 push-v3 door-open-v3 ...)')
    p.add_argument('--n-action-steps', type=int, nargs='+', default=[1, 2, 4, 8, 16], help='h values')
    p.add_argument('--reference', type=int, default=4, help='h whose inference calls define Spd = 1')
    p.add_argument('--chunk-size', type=int, default=None,
                   help="H of the policy (default: the checkpoint's own, else the parameter file's "
                        'execution.chunk_size)')
    p.add_argument('--episodes', type=int, default=50, help='episodes per task and h (default 50)')
    p.add_argument('--seed', type=int, default=1000, help='seed of episode 0 of each task (default 1000)')
    p.add_argument('--workers', type=int, default=0, help='worker processes without ROS (0 = one per core)')
    p.add_argument('--ros', action='store_true',
                   help="run through sim_node + policy_node instead (the embedded arm's tasks only)")
    p.add_argument('--params', type=Path, default=None,
                   help='ROS parameter file both modes read env/safety/execution from (default config/sim.yaml); '
                        'Meta-World tasks read only execution.max_episode_steps from it')
    p.add_argument('--horizon', choices=HORIZONS, default=None,
                   help="execution.horizon (default the params file's): learned runs the h the checkpoint's "
                        'efficiency head picks per call, each --n-action-steps value the longest window')
    p.add_argument('--out', type=Path, default=None, help='output folder (default runs/eval-<time>)')
    p.set_defaults(func=run)


def run(args) -> int:
    from policytrim_ros.envs.factory import task_suite
    from policytrim_ros.evaluation.report import failure_rows, sweep_rows, write_episodes, write_report
    from policytrim_ros.evaluation.sweep import SweepConfig, run_sweep_end_states, sim_configs
    from policytrim_ros.policy.factory import PolicyConfig, run_chunk_size

    suite = task_suite(args.tasks)
    if suite == 'metaworld' and args.ros:
        raise ValueError(f'--ros runs the embedded arm in sim_node; the Meta-World tasks {args.tasks} run '
                         'without ROS only (drop --ros)')
    params = launcher.params_file(args.params)
    env, execution, safety = sim_configs(params, args.tasks)
    horizon = args.horizon or execution.horizon
    policy = PolicyConfig(backend=args.backend, checkpoint=args.checkpoint)
    args.chunk_size = args.chunk_size or run_chunk_size(policy, execution.chunk_size)
    config = SweepConfig(
        policy=policy, tasks=tuple(args.tasks), n_action_steps=tuple(args.n_action_steps),
        chunk_size=args.chunk_size, episodes=args.episodes, seed=args.seed, control_dt=execution.control_dt,
        max_episode_steps=execution.max_episode_steps, workers=args.workers, env=env, safety=safety,
        horizon=horizon, replan_threshold=execution.replan_threshold,
        replan_min_steps=execution.replan_min_steps)
    if args.reference not in config.n_action_steps:
        raise ValueError(f'--reference {args.reference} must be one of --n-action-steps {list(args.n_action_steps)}')
    out = args.out or Path('runs') / time.strftime('eval-%Y%m%d-%H%M%S')
    started = time.monotonic()
    failures = None
    if args.ros:
        env, domain = launcher.run_env()
        print(f'nodes run with {domain}', flush=True)
        results = {}
        for h in config.n_action_steps:
            print(f'\n=== h = {h} through ROS ===', flush=True)
            results[h] = run_ros_episodes(params, {
                'policy.backend': args.backend, 'policy.checkpoint': args.checkpoint,
                'execution.chunk_size': args.chunk_size, 'execution.n_action_steps': h,
                'execution.horizon': horizon},
                args.tasks, args.episodes, args.seed, out / f'h{h}', env)
    else:
        detailed = run_sweep_end_states(config)
        write_episodes(detailed, out)
        failures = failure_rows(detailed)
        results = {h: [m for m, _ in episodes] for h, episodes in detailed.items()}
    rows = sweep_rows(results, args.reference)
    title = f'{args.backend} {args.checkpoint}'.strip() + f' ({"ROS nodes" if args.ros else "core loop"})'
    paths = write_report(rows, out, title, {
        'backend': args.backend, 'checkpoint': args.checkpoint, 'path': 'ros' if args.ros else 'core',
        'episodes_per_task': args.episodes, 'seed': args.seed, 'horizon': horizon, 'reference_n_action_steps': args.reference,
        'params': str(params), 'total_wall_clock_s': round(time.monotonic() - started, 1)}, failures)
    print(paths['markdown'].read_text())
    print(f'wrote {paths["json"]}, {paths["markdown"]} and {paths["plot"]}')
    return 0
