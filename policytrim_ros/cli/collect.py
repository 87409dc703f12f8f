"""``policytrim collect``: scripted (or takeover) demonstrations as rosbag2 MCAP bags;
``policytrim record-policy``: a deployed policy's episodes (failures too) as the same bags."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from policytrim_ros import launcher


def add_parsers(sub) -> None:
    p = sub.add_parser('collect', help='scripted demonstrations (arm or Meta-World), one rosbag2 (MCAP) each',
                       description='Runs the scripted expert as an operator (efficient, or teleop with '
                                   'human-like dwell, hesitations, detours and corrections) without ROS and '
                                   'writes each successful episode as a bag with the robot-side topics. On '
                                   "Meta-World tasks the expert is Meta-World's bundled one and the bags' joint "
                                   'names are its action columns (dx dy dz grip).')
    p.add_argument('--tasks', nargs='+', default=['reach', 'push', 'pick_place'],
                   help="tasks of one robot: the arm's (default reach push pick_place) or Meta-World's "
                        '(any of its 50 v3 tasks: reach-v3 push-v3 door-open-v3 ...; a task whose expert needs '
                        'more than 150 steps gets its own longer step limit)')
    p.add_argument('--episodes', type=int, default=100, help='episodes per task (default 100)')
    p.add_argument('--style', default='teleop', help='operator style: efficient or teleop (default teleop)')
    p.add_argument('--seed', type=int, default=0, help='first seed (demonstration seeds are 0-999)')
    p.add_argument('--workers', type=int, default=2, help='worker processes (default 2)')
    p.add_argument('--out', type=Path, default=Path('runs/demos'), help='output root (default runs/demos)')
    p.add_argument('--params', type=Path, default=None,
                   help="ROS parameter file whose sim_node env (camera, image size, disturbances) the arm's "
                        'episodes run in (default config/sim.yaml); Meta-World tasks ignore it. With --takeover '
                        "also the policy node's execution (H, h) and safety limits the policy drives with")
    p.add_argument('--takeover', default=None, metavar='CHECKPOINT',
                   help='takeover demonstrations (HG-DAgger style): this VLA checkpoint drives each episode '
                        'first, as in evaluation, then the operator takes over; only its part is recorded')
    p.add_argument('--takeover-steps', type=int, nargs=2, default=(10, 100), metavar=('LO', 'HI'),
                   help='control steps the policy drives before the takeover, drawn uniformly per seed '
                        '(default 10 100)')
    p.add_argument('--takeover-backend', choices=('torch', 'onnx'), default='torch',
                   help='backend that runs the takeover checkpoint (default torch)')
    p.set_defaults(func=run)

    p = sub.add_parser('record-policy', help="a policy's episodes on the embedded arm, one rosbag2 (MCAP) each",
                       description='Runs a VLA checkpoint in the core episode loop (as policytrim eval does) and '
                                   'records every episode, failed or not, with the robot-side topics: cameras and '
                                   'joint states each control step, one JointTrajectory per inference call (its '
                                   'executed window), instruction and episode events. For offline fine-tuning '
                                   '(policytrim train-offline) and export (policytrim export-lerobot).')
    p.add_argument('--checkpoint', required=True, help='VLA checkpoint directory or package:// URI')
    p.add_argument('--backend', choices=('torch', 'onnx'), default='torch', help='backend (default torch)')
    p.add_argument('--n-action-steps', type=int, required=True, help='h, actions executed per inference call')
    p.add_argument('--tasks', nargs='+', default=['reach', 'push', 'pick_place'], help='arm tasks')
    p.add_argument('--episodes', type=int, default=100, help='episodes per task (default 100)')
    p.add_argument('--seed', type=int, default=0,
                   help='first seed (default 0; keep recordings below 1000, where evaluation seeds start)')
    p.add_argument('--workers', type=int, default=1, help='worker processes (default 1)')
    p.add_argument('--out', type=Path, required=True, help='output root: <out>/<task>/policy-<seed>/')
    p.add_argument('--params', type=Path, default=None,
                   help='ROS parameter file of the env, execution and safety limits (default config/sim.yaml)')
    p.set_defaults(func=record)


def record(args) -> int:
    from policytrim_ros.data.rollouts import record_policy_episodes
    from policytrim_ros.evaluation.sweep import sim_configs
    from policytrim_ros.policy.factory import PolicyConfig, run_chunk_size
    env, execution, safety = sim_configs(launcher.params_file(args.params), args.tasks)
    policy = PolicyConfig(args.backend, args.checkpoint)
    execution = replace(execution, chunk_size=run_chunk_size(policy, execution.chunk_size),
                        n_action_steps=args.n_action_steps)
    rows = record_policy_episodes(policy, execution, safety, args.tasks, args.episodes, args.seed, args.out,
                                  env_config=env, workers=args.workers)
    print(f'wrote {len(rows)} bags under {args.out}, {sum(r["success"] for r in rows)} successful '
          f'(summary: {args.out / "index.json"})')
    return 0


def run(args) -> int:
    from policytrim_ros.data.collect import Takeover, collect_demonstrations
    from policytrim_ros.evaluation.sweep import sim_configs
    from policytrim_ros.policy.factory import PolicyConfig, run_chunk_size
    env, execution, safety = sim_configs(launcher.params_file(args.params), args.tasks)
    takeover = None
    if args.takeover:
        policy = PolicyConfig(args.takeover_backend, args.takeover)
        execution = replace(execution, chunk_size=run_chunk_size(policy, execution.chunk_size))   # the checkpoint's H
        takeover = Takeover(policy, execution, safety, tuple(args.takeover_steps))
    paths = collect_demonstrations(args.tasks, args.episodes, args.style, args.seed, args.out, workers=args.workers,
                                   env_config=env, takeover=takeover)
    print(f'wrote {len(paths)} bags under {args.out} (summary: {args.out / "index.json"})')
    return 0
