"""Latency of one chunk at batch 1: the torch backend vs onnxruntime, for each VLA preset.

Each preset is built with random weights (latency does not depend on training), saved as a
checkpoint, exported to ONNX, and served through ``TorchVLAPolicy`` and ``OnnxVLAPolicy`` exactly as
the policy node does (observation in, (H, A) chunk out; the instruction embedding is cached). The
backends are timed in alternating blocks of BLOCK calls, so that drift of a shared machine hits both
alike, yet neither competes with the other's spinning worker threads (call-by-call alternation made
torch ~100x slower on a 2-core machine).

    python bench/inference.py [--presets vla-2m vla-10m] [--threads 2] [--runs 300] [--warmup 30]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from policytrim_ros.policy.base import Observation
from policytrim_ros.policy.checkpoint import save_checkpoint
from policytrim_ros.policy.onnx import OnnxVLAPolicy, export_onnx
from policytrim_ros.policy.torch_policy import TorchVLAPolicy
from policytrim_ros.policy.vla import PRESETS, preset
from policytrim_ros.policy.vla.modeling_vla import VLAModel

INSTRUCTION = 'pick up the cube and place it at the goal'
BLOCK = 50
"""Timed calls of one backend before switching to the other."""
SETTLE_CALLS = 3
"""Untimed calls at the start of each block."""


def observation(config, rng: np.random.Generator) -> Observation:
    """A random observation of the preset's image size and joint count."""
    return Observation(image=rng.integers(0, 256, (*config.image_size, 3), dtype=np.uint8),
                       joint_positions=rng.normal(scale=0.5, size=config.state_dim),
                       joint_velocities=np.zeros(config.state_dim), environment_state=np.zeros(10),
                       instruction=INSTRUCTION, time=0.0, step=0)


def bench_preset(name: str, threads: int, runs: int, warmup: int, workdir: Path) -> list[dict]:
    """Rows (one per backend) of latency statistics in milliseconds for preset ``name``."""
    config = preset(name)
    torch.manual_seed(0)
    model = VLAModel(config)
    directory = save_checkpoint(workdir / name, model, config, {'purpose': 'latency benchmark'})
    onnx_path = export_onnx(directory)
    policies = {'torch': TorchVLAPolicy(directory), 'onnx': OnnxVLAPolicy(directory, providers=['CPUExecutionProvider'],
                                                                          intra_op_num_threads=threads)}
    rng = np.random.default_rng(0)
    obs = [observation(config, rng) for _ in range(16)]
    chunks = {b: p.predict_action_chunk(obs[0]) for b, p in policies.items()}
    max_diff = float(np.abs(chunks['torch'] - chunks['onnx']).max())
    times: dict[str, list[float]] = {b: [] for b in policies}
    for backend, policy in policies.items():
        for i in range(warmup):
            policy.predict_action_chunk(obs[i % len(obs)])
    while len(times['onnx']) < runs:
        for backend, policy in policies.items():
            for i in range(SETTLE_CALLS):   # let the other backend's idle threads stop spinning
                policy.predict_action_chunk(obs[i])
            for i in range(min(BLOCK, runs - len(times[backend]))):
                start = time.perf_counter()
                policy.predict_action_chunk(obs[i % len(obs)])
                times[backend].append(time.perf_counter() - start)
    rows = []
    for backend, seconds in times.items():
        ms = np.array(seconds) * 1e3
        rows.append({'preset': name, 'parameters': model.num_parameters(), 'backend': backend,
                     'median_ms': float(np.median(ms)), 'p99_ms': float(np.percentile(ms, 99)),
                     'mean_ms': float(ms.mean()), 'image_size': list(config.image_size),
                     'chunk_size': config.chunk_size, 'onnx_mb': onnx_path.stat().st_size / 1e6,
                     'max_abs_diff_vs_torch': max_diff})
    rows[1]['speedup'] = rows[0]['median_ms'] / rows[1]['median_ms']
    return rows


def print_table(rows: list[dict], threads: int, runs: int) -> None:
    print(f'\nbatch 1, {threads} CPU threads, {runs} runs per backend '
          f'(torch {torch.__version__}, onnxruntime {onnxruntime.__version__})')
    header = f"{'preset':<9} {'params':>7} {'backend':<7} {'median ms':>9} {'p99 ms':>7} {'speedup':>7} {'onnx MB':>7}"
    print(header + '\n' + '-' * len(header))
    for r in rows:
        speedup = f"{r['speedup']:.2f}x" if 'speedup' in r else ''
        print(f"{r['preset']:<9} {r['parameters'] / 1e6:>6.2f}M {r['backend']:<7} {r['median_ms']:>9.2f} "
              f"{r['p99_ms']:>7.2f} {speedup:>7} {r['onnx_mb']:>7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--presets', nargs='+', default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument('--threads', type=int, default=2, help='CPU threads for torch and onnxruntime')
    parser.add_argument('--runs', type=int, default=300, help='timed calls per backend and preset')
    parser.add_argument('--warmup', type=int, default=30, help='untimed calls first')
    parser.add_argument('--output', type=Path, default=Path(__file__).parent / 'results' / 'inference.json')
    args = parser.parse_args()
    if args.threads < 1 or args.runs < 1 or args.warmup < 0:
        parser.error('--threads and --runs must be >= 1 and --warmup >= 0')
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.presets:
            rows += bench_preset(name, args.threads, args.runs, args.warmup, Path(workdir))
    print_table(rows, args.threads, args.runs)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        'benchmark': 'inference', 'batch_size': 1, 'threads': args.threads, 'runs': args.runs,
        'warmup': args.warmup, 'torch': torch.__version__, 'onnxruntime': onnxruntime.__version__,
        'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                    'cpu_count': os.cpu_count()},
        'results': rows}, indent=2) + '\n')
    print(f'wrote {args.output}')


if __name__ == '__main__':
    main()
