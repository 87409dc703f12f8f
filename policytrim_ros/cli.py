"""The ``policytrim`` command.

    policytrim demo    run the embedded sim + policy node over ROS 2 for each executed length h and
                       compare inference calls (the README's main job)
    policytrim eval    forced-horizon sweep over h, without ROS (multi-process) or through the nodes;
                       writes JSON, a markdown table and a PNG plot
    policytrim collect        scripted demonstrations (efficient or teleop style) as rosbag2 MCAP
    policytrim train-bc       behaviour cloning of the compact VLA from demonstration bags
    policytrim train          PolicyTrim post-training: Stage 1, 2 or all (GRPO, embedded arm or Meta-World)
    policytrim export-onnx    export a checkpoint to ONNX for the onnxruntime backend
    policytrim release        copy a checkpoint with float16 weights, for shipping (half the size)

collect, train-bc and eval (without --ros) also run the Meta-World 3.1.1 tasks reach-v3, push-v3
and pick-place-v3 (--tasks reach-v3 ...); one command takes the tasks of one robot.

An error prints one line, policytrim <command>: error: <what to fix>, and exits with 2 for bad
input (a config key or value, an argument, a missing, damaged or edited checkpoint, a bag in strict
mode), as for a usage error, or 1 when something else failed (a file system error, a crashed run).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from policytrim_ros import constants as C
from policytrim_ros import launcher
from policytrim_ros.config import load_yaml, ros_parameters
from policytrim_ros.evaluation.ros import run_ros_episodes
from policytrim_ros.execution import metrics as M


def _demo_parser(sub) -> None:
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
    p.set_defaults(func=demo)


SHIPPED_POLICYTRIM = 'policytrim=package://policytrim_ros/models/policytrim-wrist-h32-dagger'
"""The demo's default comparison: the shipped PolicyTrim model at the h it was trained for."""


def _eval_parser(sub) -> None:
    p = sub.add_parser('eval', help='forced-horizon sweep: N episodes per task for each executed length h',
                       description='Runs N episodes of each task for every h (paired seeds), reports SR, steps '
                                   'S, h, H, h/H, inference calls, Spd against --reference and wall-clock, and '
                                   'writes sweep.json, sweep.md and sweep.png under --out, plus h<h>/episodes.jsonl '
                                   "(without --ros each line has the episode's end_state, and sweep.md counts "
                                   'the failed episodes by failure mode). Tasks are the '
                                   "embedded arm's (reach push pick_place) or Meta-World's (reach-v3 push-v3 "
                                   'pick-place-v3; without --ros only, in the default MetaWorldConfig env at its '
                                   '0.0125 s step, with no joint-limit safety checks: Meta-World clips its '
                                   'actions to [-1, 1]).')
    p.add_argument('--backend', default='expert', help='policy backend: expert, torch, onnx (default expert)')
    p.add_argument('--checkpoint', default='', help='checkpoint directory (torch/onnx)')
    p.add_argument('--tasks', nargs='+', default=['reach', 'push', 'pick_place'],
                   help="tasks of one robot: the arm's (default reach push pick_place) or Meta-World's "
                        '(reach-v3 push-v3 pick-place-v3)')
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
    p.add_argument('--out', type=Path, default=None, help='output folder (default runs/eval-<time>)')
    p.set_defaults(func=evaluate)


def evaluate(args) -> int:
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
    policy = PolicyConfig(backend=args.backend, checkpoint=args.checkpoint)
    args.chunk_size = args.chunk_size or run_chunk_size(policy, execution.chunk_size)
    config = SweepConfig(
        policy=policy, tasks=tuple(args.tasks), n_action_steps=tuple(args.n_action_steps),
        chunk_size=args.chunk_size, episodes=args.episodes, seed=args.seed, control_dt=execution.control_dt,
        max_episode_steps=execution.max_episode_steps, workers=args.workers, env=env, safety=safety)
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
                'execution.chunk_size': args.chunk_size, 'execution.n_action_steps': h},
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
        'episodes_per_task': args.episodes, 'seed': args.seed, 'reference_n_action_steps': args.reference,
        'params': str(params), 'total_wall_clock_s': round(time.monotonic() - started, 1)}, failures)
    print(paths['markdown'].read_text())
    print(f'wrote {paths["json"]}, {paths["markdown"]} and {paths["plot"]}')
    return 0


def _collect_parser(sub) -> None:
    p = sub.add_parser('collect', help='scripted demonstrations (arm or Meta-World), one rosbag2 (MCAP) each',
                       description='Runs the scripted expert as an operator (efficient, or teleop with '
                                   'human-like dwell, hesitations, detours and corrections) without ROS and '
                                   'writes each successful episode as a bag with the robot-side topics. On '
                                   "Meta-World tasks the expert is Meta-World's bundled one and the bags' joint "
                                   'names are its action columns (dx dy dz grip).')
    p.add_argument('--tasks', nargs='+', default=['reach', 'push', 'pick_place'],
                   help="tasks of one robot: the arm's (default reach push pick_place) or Meta-World's "
                        '(reach-v3 push-v3 pick-place-v3)')
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
    p.set_defaults(func=collect)


def collect(args) -> int:
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


def _train_bc_parser(sub) -> None:
    p = sub.add_parser('train-bc', help='behaviour cloning of the compact VLA from demonstration bags',
                       description='Trains the VLA chunk head on demonstration windows. Config: a YAML of '
                                   'BCConfig fields (see config/training/bc.yaml); --set overrides single keys.')
    p.add_argument('--config', type=Path, default=None, help='YAML with BCConfig fields')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help=_SET_HELP)
    p.add_argument('--resume', action='store_true', help='continue the run in out_dir from its last checkpoint')
    p.set_defaults(func=train_bc)


_SET_HELP = 'override config keys (YAML values; a dotted key, grpo.clip=0.1, sets one nested field)'


def _overrides(pairs: list[str]) -> dict:
    import yaml
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition('=')
        if not sep:
            raise ValueError(f'--set expects KEY=VALUE, got {pair!r}')
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):
            try:
                parsed = float(parsed)   # YAML 1.1 reads 5e-5 (no dot) as a string
            except ValueError:
                pass
        values[key] = parsed
    return values


def _with_overrides(values: dict, pairs: list[str]) -> dict:
    """``values`` (a config mapping) with ``--set`` pairs applied; a dotted key (grpo.log_ratio=mean)
    sets one field of a nested mapping and keeps its others."""
    import copy
    merged = copy.deepcopy(values)
    for key, value in _overrides(pairs).items():
        node = merged
        *parents, leaf = key.split('.')
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise ValueError(f'--set {key}: {parent} is not a mapping')
        node[leaf] = value
    return merged


def train_bc(args) -> int:
    from policytrim_ros.config import from_dict
    from policytrim_ros.training.bc import BCConfig
    from policytrim_ros.training.bc import train_bc as run
    values = load_yaml(args.config) if args.config else {}
    config = from_dict(BCConfig, _with_overrides(values, args.set))
    final = run(config, resume=args.resume)
    print(f'final checkpoint: {final}')
    return 0


def _train_parser(sub) -> None:
    p = sub.add_parser('train', help='PolicyTrim post-training of a VLA checkpoint: Stage 1, Stage 2 or both',
                       description='Runs PolicyTrim with GRPO on the embedded arm or Meta-World (the config\'s '
                                   'tasks): Stage 1 cycles the '
                                   'executed length h over Gamma and rewards success * (1 + beta * h / H); Stage 2 '
                                   'fixes h and rewards fewer, reproducible steps. Config: a YAML of '
                                   'PolicyTrimConfig fields (see config/training/policytrim.yaml).')
    p.add_argument('--stage', choices=('1', '2', 'all'), required=True,
                   help="1, 2, or all: Stage 1, the between-stage sweep (selection.json) and Stage 2 under out_dir")
    p.add_argument('--config', type=Path, default=None, help='YAML with PolicyTrimConfig fields')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help=_SET_HELP)
    p.add_argument('--params', type=Path, default=None,
                   help='ROS parameter file the env and safety limits come from (default config/sim.yaml)')
    p.add_argument('--resume', action='store_true', help='continue the run in out_dir from its last checkpoint')
    p.set_defaults(func=train)


def train(args) -> int:
    from policytrim_ros.config import from_dict
    from policytrim_ros.evaluation.sweep import sim_configs
    from policytrim_ros.training.trainer import PolicyTrimConfig, train_policytrim
    values = load_yaml(args.config) if args.config else {}
    stage = 1 if args.stage == 'all' else int(args.stage)
    config = from_dict(PolicyTrimConfig, {**_with_overrides(values, args.set), 'stage': stage})
    env, _, safety = sim_configs(launcher.params_file(args.params), config.tasks)
    if args.stage == 'all':
        from policytrim_ros.training.pipeline import run_policytrim
        final = run_policytrim(config, env, safety, resume=args.resume)
    else:
        final = train_policytrim(config, env, safety, resume=args.resume)
    print(f'final checkpoint: {final}')
    return 0


def _export_parser(sub) -> None:
    p = sub.add_parser('export-onnx', help='export a VLA checkpoint to ONNX (model.onnx next to it)')
    p.add_argument('checkpoint', type=Path, help='checkpoint directory')
    p.add_argument('--out', type=Path, default=None, help='output file (default <checkpoint>/model.onnx)')
    p.set_defaults(func=export)


def export(args) -> int:
    from policytrim_ros.policy.onnx import export_onnx
    print(f'wrote {export_onnx(args.checkpoint, args.out)}')
    return 0


def _release_parser(sub) -> None:
    p = sub.add_parser('release', help='copy a checkpoint with float16 weights (half the size), for shipping',
                       description='Writes CHECKPOINT\'s weights in float16 plus its config.json into OUT; '
                                   'loading casts them back to float32. Evaluate the released copy: its '
                                   'outputs differ from the float32 original by float16 rounding.')
    p.add_argument('checkpoint', type=Path, help='checkpoint directory (e.g. runs/bc/last)')
    p.add_argument('out', type=Path, help='output directory (e.g. models/my-policy)')
    p.set_defaults(func=release)


def release(args) -> int:
    import torch

    from policytrim_ros.policy.checkpoint import file_sha256, load_checkpoint, save_checkpoint
    model, config, metadata = load_checkpoint(args.checkpoint)
    source = args.checkpoint / 'model.safetensors'
    save_checkpoint(args.out, model, config, {**metadata, 'released_from': str(args.checkpoint),
                                              'released_from_sha256': file_sha256(source)},
                    dtype=torch.float16)
    size = (args.out / 'model.safetensors').stat().st_size
    print(f'wrote {args.out} ({size / 1e6:.2f} MB of float16 weights, from {source.stat().st_size / 1e6:.2f} MB)')
    return 0


def _explicit_policy(args) -> dict:
    """The policy parameters given on the command line ({'backend': ..., 'checkpoint': ...})."""
    return {k: v for k, v in (('backend', args.backend), ('checkpoint', args.checkpoint)) if v}


def _demo_runs(args, shown: dict, chunk_size: int, default_h: int) -> list[tuple[str, dict, int, int]]:
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


def demo(args) -> int:
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
    for label, policy, h, H in _demo_runs(args, shown, chunk_size, execution.n_action_steps):
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='policytrim', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    _demo_parser(sub)
    _eval_parser(sub)
    _collect_parser(sub)
    _train_bc_parser(sub)
    _train_parser(sub)
    _export_parser(sub)
    _release_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:   # bad input: a config, an argument, a checkpoint (CheckpointError), a bag
        print(f'policytrim {args.command}: error: {err}', file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as err:
        print(f'policytrim {args.command}: error: {err}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    raise SystemExit(main())
