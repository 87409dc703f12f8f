"""The ``policytrim`` command.

    policytrim demo    run the embedded sim + policy node over ROS 2 for each executed length h and
                       compare inference calls (the README's main job)
    policytrim eval    forced-horizon sweep over h, without ROS (multi-process) or through the nodes;
                       writes JSON, a markdown table and a PNG plot
    policytrim collect        scripted demonstrations (efficient or teleop style) as rosbag2 MCAP
    policytrim record-policy  a policy's episodes (failures too) as the same bags
    policytrim train-bc       behaviour cloning of the compact VLA from demonstration bags
    policytrim train          PolicyTrim post-training: Stage 1, 2 or all (GRPO, embedded arm or Meta-World)
    policytrim train-offline  reward-weighted fine-tuning from recorded episode bags (AWR / filtered BC)
    policytrim export-onnx    export a checkpoint to ONNX for the onnxruntime backend
    policytrim release        copy a checkpoint with float16 weights, for shipping (half the size)
    policytrim serve          serve a checkpoint over openpi's websocket protocol (policy.backend remote)
    policytrim export-lerobot episode bags -> a LeRobotDataset v3.0 directory (parquet + mp4)

collect, train-bc and eval (without --ros) also run the 50 Meta-World 3.1.1 v3 tasks by name
(--tasks reach-v3 door-open-v3 ...; robots/metaworld_tasks.py); one command takes the tasks of one robot.

An error prints one line, policytrim <command>: error: <what to fix>, and exits with 2 for bad
input (a config key or value, an argument, a missing, damaged or edited checkpoint, a bag in strict
mode), as for a usage error, or 1 when something else failed (a file system error, a crashed run).

One module per command or pair of commands (demo, evaluate, collect, train, checkpoints, serve, datasets), each with
``add_parsers(sub)``; ``overrides`` reads the ``--set KEY=VALUE`` pairs of train-bc and train.
"""
from __future__ import annotations

import argparse
import sys

from policytrim_ros.cli import checkpoints, collect, datasets, demo, evaluate, serve, train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='policytrim', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    for command in (demo, evaluate, collect, train, checkpoints, serve, datasets):
        command.add_parsers(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:   # bad input: a config, an argument, a checkpoint (CheckpointError), a bag
        print(f'policytrim {args.command}: error: {err}', file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as err:
        print(f'policytrim {args.command}: error: {err}', file=sys.stderr)
        return 1
