"""``policytrim train-bc`` (behaviour cloning), ``policytrim train`` (PolicyTrim post-training),
``policytrim train-horizon`` (the efficiency head on a frozen VLA) and ``policytrim train-offline``
(reward-weighted fine-tuning from recorded episode bags)."""
from __future__ import annotations

from pathlib import Path

from policytrim_ros import launcher
from policytrim_ros.cli.overrides import SET_HELP, with_overrides
from policytrim_ros.config import load_yaml


def add_parsers(sub) -> None:
    p = sub.add_parser('train-bc', help='behaviour cloning of the compact VLA from demonstration bags',
                       description='Trains the VLA chunk head on demonstration windows. Config: a YAML of '
                                   'BCConfig fields (see config/training/bc.yaml); --set overrides single keys.')
    p.add_argument('--config', type=Path, default=None, help='YAML with BCConfig fields')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help=SET_HELP)
    p.add_argument('--resume', action='store_true', help='continue the run in out_dir from its last checkpoint')
    p.set_defaults(func=train_bc)

    p = sub.add_parser('train', help='PolicyTrim post-training of a VLA checkpoint: Stage 1, Stage 2 or both',
                       description='Runs PolicyTrim with GRPO on the embedded arm or Meta-World (the config\'s '
                                   'tasks): Stage 1 cycles the '
                                   'executed length h over Gamma and rewards success * (1 + beta * h / H); Stage 2 '
                                   'fixes h and rewards fewer, reproducible steps. Config: a YAML of '
                                   'PolicyTrimConfig fields (see config/training/policytrim.yaml).')
    p.add_argument('--stage', choices=('1', '2', 'all'), required=True,
                   help="1, 2, or all: Stage 1, the between-stage sweep (selection.json) and Stage 2 under out_dir")
    p.add_argument('--config', type=Path, default=None, help='YAML with PolicyTrimConfig fields')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help=SET_HELP)
    p.add_argument('--params', type=Path, default=None,
                   help='ROS parameter file the env and safety limits come from (default config/sim.yaml)')
    p.add_argument('--resume', action='store_true', help='continue the run in out_dir from its last checkpoint')
    p.set_defaults(func=train)

    p = sub.add_parser('train-horizon', help='GRPO on an efficiency head that picks h per call, on a frozen VLA',
                       description='Adds an efficiency head to a VLA checkpoint (or continues its head) and trains '
                                   'it with GRPO on the embedded arm or Meta-World: each call\'s executed length h '
                                   'is drawn from the head, the VLA\'s chunks are its mean, and a successful episode '
                                   'is rewarded for fewer inference calls. Config: a YAML of HorizonTrainConfig '
                                   'fields (see config/training/horizon.yaml).')
    p.add_argument('--config', type=Path, default=None, help='YAML with HorizonTrainConfig fields')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help=SET_HELP)
    p.add_argument('--params', type=Path, default=None,
                   help='ROS parameter file the env and safety limits come from (default config/sim.yaml)')
    p.add_argument('--resume', action='store_true', help='continue the run in out_dir from its last checkpoint')
    p.set_defaults(func=train_horizon)

    p = sub.add_parser('train-offline', help="fine-tune a deployed VLA from its recorded episode bags (AWR / filtered BC)",
                       description='Reads every episode bag under the bags folder (policytrim record-policy, or ros2 bag '
                                   'record of the robot-side topics split per episode), scores each episode with the '
                                   'PolicyTrim rewards from what it holds (success, steps, executed h / H; a task\'s '
                                   'episodes form the group) and fine-tunes init_from by regression on the executed '
                                   'actions, each sample drawn in proportion to its episode\'s weight (AWR '
                                   'exp(A / temperature), clipped, or filtered BC). Config: a YAML of OfflineConfig '
                                   'fields (see config/training/offline.yaml).')
    p.add_argument('--bags', default=None, help='folder of episode bags (overrides the config\'s bags)')
    p.add_argument('--config', type=Path, default=None, help='YAML with OfflineConfig fields')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help=SET_HELP)
    p.add_argument('--resume', action='store_true', help='continue the run in out_dir from its last checkpoint')
    p.set_defaults(func=train_offline)


def train_bc(args) -> int:
    from policytrim_ros.config import from_dict
    from policytrim_ros.training.bc import train_bc as run
    from policytrim_ros.training.bc_config import BCConfig
    values = load_yaml(args.config) if args.config else {}
    config = from_dict(BCConfig, with_overrides(values, args.set))
    final = run(config, resume=args.resume)
    print(f'final checkpoint: {final}')
    return 0


def train(args) -> int:
    from policytrim_ros.config import from_dict
    from policytrim_ros.evaluation.sweep import sim_configs
    from policytrim_ros.training.trainer import PolicyTrimConfig, train_policytrim
    values = load_yaml(args.config) if args.config else {}
    stage = 1 if args.stage == 'all' else int(args.stage)
    config = from_dict(PolicyTrimConfig, {**with_overrides(values, args.set), 'stage': stage})
    env, _, safety = sim_configs(launcher.params_file(args.params), config.tasks)
    if args.stage == 'all':
        from policytrim_ros.training.pipeline import run_policytrim
        final = run_policytrim(config, env, safety, resume=args.resume)
    else:
        final = train_policytrim(config, env, safety, resume=args.resume)
    print(f'final checkpoint: {final}')
    return 0


def train_horizon(args) -> int:
    from policytrim_ros.config import from_dict
    from policytrim_ros.evaluation.sweep import sim_configs
    from policytrim_ros.training.horizon_trainer import HorizonTrainConfig, train_horizon_head
    values = load_yaml(args.config) if args.config else {}
    config = from_dict(HorizonTrainConfig, with_overrides(values, args.set))
    env, _, safety = sim_configs(launcher.params_file(args.params), config.tasks)
    print(f'final checkpoint: {train_horizon_head(config, env, safety, resume=args.resume)}')
    return 0


def train_offline(args) -> int:
    from policytrim_ros.config import from_dict
    from policytrim_ros.training.offline import OfflineConfig
    from policytrim_ros.training.offline import train_offline as run
    values = with_overrides(load_yaml(args.config) if args.config else {}, args.set)
    if args.bags is not None:
        values['bags'] = args.bags
    print(f'final checkpoint: {run(from_dict(OfflineConfig, values), resume=args.resume)}')
    return 0
