"""``policytrim export-lerobot``: episode bags -> a LeRobotDataset v3.0 directory."""
from __future__ import annotations

from pathlib import Path


def add_parsers(sub) -> None:
    p = sub.add_parser('export-lerobot', help='episode bags -> a LeRobotDataset v3.0 directory (parquet + mp4)',
                       description='Reads every episode bag under BAGS (demonstrations, policy recordings, or bags '
                                   'of ros2 bag record with the robot-side topics) and writes them as one '
                                   'LeRobotDataset v3.0 at OUT: meta/ (info.json, stats.json, tasks.parquet, '
                                   'episodes/), data/ (one frame per control step) and videos/ (one mp4 per camera), '
                                   'then checks the result against the v3.0 layout rules. The task is the '
                                   'instruction; success, seed, the task name and the source bag are kept per episode.')
    p.add_argument('bags', type=Path, help='folder of episode bags (searched recursively) or one bag')
    p.add_argument('out', type=Path, help='dataset directory to create (must not exist or be empty)')
    p.add_argument('--robot-type', default='policytrim_arm', help="info.json robot_type (default policytrim_arm)")
    p.add_argument('--codec', choices=('libsvtav1', 'libx264'), default='libsvtav1',
                   help="video encoder: libsvtav1 (AV1, LeRobot's default) or libx264 (H.264)")
    p.add_argument('--strict', action='store_true', help='stop at the first bag that yields no episode')
    p.set_defaults(func=export)


def export(args) -> int:
    from policytrim_ros.data.lerobot import export_lerobot
    report = export_lerobot(args.bags, args.out, args.robot_type, args.codec, args.strict)
    print(f'wrote {report.episodes} episodes, {report.frames} frames, {report.tasks} tasks to {args.out} '
          f'(checked against the v3.0 layout); skipped {len(report.skipped)} bags')
    for bag, why in report.skipped:
        print(f'  skipped {bag}: {why}')
    return 0
