"""``policytrim export-onnx`` and ``policytrim release``: derived copies of a checkpoint."""
from __future__ import annotations

from pathlib import Path


def add_parsers(sub) -> None:
    p = sub.add_parser('export-onnx', help='export a VLA checkpoint to ONNX (model.onnx next to it)')
    p.add_argument('checkpoint', type=Path, help='checkpoint directory')
    p.add_argument('--out', type=Path, default=None, help='output file (default <checkpoint>/model.onnx)')
    p.set_defaults(func=export)

    p = sub.add_parser('release', help='copy a checkpoint with float16 weights (half the size), for shipping',
                       description='Writes CHECKPOINT\'s weights in float16 plus its config.json into OUT; '
                                   'loading casts them back to float32. Evaluate the released copy: its '
                                   'outputs differ from the float32 original by float16 rounding.')
    p.add_argument('checkpoint', type=Path, help='checkpoint directory (e.g. runs/bc/last)')
    p.add_argument('out', type=Path, help='output directory (e.g. models/my-policy)')
    p.set_defaults(func=release)


def export(args) -> int:
    from policytrim_ros.policy.onnx import export_onnx
    print(f'wrote {export_onnx(args.checkpoint, args.out)}')
    return 0


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
