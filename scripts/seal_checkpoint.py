"""Seal checkpoints saved before config.json carried its integrity record (``integrity_sha256``).

Loading refuses a checkpoint without the record, because nothing then shows that its config.json
(action_offsets, the action bounds, joint names, cameras, ...) is the one its weights were trained
with. Check that it is (e.g. against the run's own config.json and the command that made it), then:

    .venv/bin/python scripts/seal_checkpoint.py runs/bc/last runs/bc/checkpoints/*

Adds only the record to each config.json (the weights are not touched), then loads the checkpoint
to confirm it. A checkpoint already sealed is checked and left as it is.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from policytrim_ros.policy.checkpoint import CheckpointError, load_checkpoint, seal_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint', nargs='+', type=Path, help='checkpoint folders')
    args = parser.parse_args(argv)
    for checkpoint in args.checkpoint:
        try:
            sealed = seal_checkpoint(checkpoint)
            load_checkpoint(checkpoint)
        except CheckpointError as err:
            print(f'seal_checkpoint: error: {err}', file=sys.stderr)
            return 2
        print(f"{checkpoint}: {'sealed' if sealed else 'already sealed'}")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
