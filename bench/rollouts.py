"""Rollouts per second of the RL rollout path: ``training.workers.RolloutPool`` running
``training.rollout.collect_rollout`` (the sampling VLA) on the embedded arm, in this process and
with worker processes (``--engine local``), each stepping one or more envs in lockstep with batched
inference calls (``--envs-per-worker``), or with the same workers as actors of a Ray instance
started on this machine (``--engine ray``, the optional extra; ``--workers`` then counts its actors).

The checkpoint runs with the exploration log_std of the shipped PolicyTrim config (-2.5), the env
and safety limits of sim_node and policy_node (config/sim.yaml), and every cell (workers, h) rolls
out the same jobs: ``--episodes`` seeds per task from ``--seed``, noise seed = initial-state seed.
Each pool first runs one untimed warm-up round (process start, imports, weights, the first render);
the timed part is ``RolloutPool.collect`` as the trainer calls it, weights hand-over included,
repeated ``--repeats`` times (the row reports the median; a shared machine's drift hits single runs).
``CPU ms / rollout`` counts this process and every live process it started (Linux /proc: the
pool's workers; with Ray also its GCS server, raylet and actors): unlike the wall-clock, it barely
moves when other jobs compete for the cores.
``digest`` hashes every rollout's sampled chunks in job order: two runs (two commits, two engines,
or two ``envs_per_worker``) with the same digest rolled out the same episodes.

    python bench/rollouts.py [--workers 0 2] [--engine local ray] [--envs-per-worker 1 8] \
        [--horizons 8 32] [--episodes 10] [--repeats 3] [--out bench/results/rollouts]

Ray listens on every interface; measure it inside a private network namespace (docs/scale-out.md):
    RAY_AUTH_MODE=disabled unshare -n sh -c 'ip link set lo up && exec python bench/rollouts.py ...'
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from policytrim_ros import launcher, resources
from policytrim_ros.envs.factory import suite_control_dt, task_suite
from policytrim_ros.evaluation.sweep import sim_configs
from policytrim_ros.execution.metrics import format_table, write_json
from policytrim_ros.policy.checkpoint import load_checkpoint
from policytrim_ros.training.engines import open_rollouts
from policytrim_ros.training.workers import RolloutJob, RolloutsConfig, RolloutSetup

CHECKPOINT = 'package://policytrim_ros/models/bc-wrist-h32-dagger'
COLUMNS = ['engine', 'workers', 'envs_per_worker', 'n_action_steps', 'rollouts', 'success_rate', 'steps',
           'inference_calls', 'wall_clock_s', 'rollouts_per_s', 'steps_per_s', 'cpu_ms_per_rollout', 'digest']
LABELS = {'envs_per_worker': 'envs / worker', 'n_action_steps': 'h', 'steps': 'steps / rollout', 'inference_calls': 'calls / rollout',
          'rollouts_per_s': 'rollouts / s', 'steps_per_s': 'steps / s', 'cpu_ms_per_rollout': 'CPU ms / rollout'}
DECIMALS = {'wall_clock_s': 1, 'rollouts_per_s': 2, 'steps_per_s': 0, 'cpu_ms_per_rollout': 0}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--checkpoint', default=CHECKPOINT, help=f'VLA checkpoint (default {CHECKPOINT})')
    p.add_argument('--tasks', nargs='+', default=['reach', 'push', 'pick_place'], help='embedded arm tasks')
    p.add_argument('--horizons', type=int, nargs='+', default=[8, 32], help='executed lengths h (default 8 32)')
    p.add_argument('--workers', type=int, nargs='+', default=[0, 2],
                   help='worker processes of each pool (0 = in this process; default 0 2)')
    p.add_argument('--engine', nargs='+', choices=('local', 'ray'), default=['local'],
                   help='local (RolloutPool, the default) and/or ray (RayRolloutPool on a Ray instance started '
                        'here, --workers actors; needs the ray extra)')
    p.add_argument('--envs-per-worker', type=int, nargs='+', default=[1],
                   help='envs each worker steps in lockstep, batching their inference calls (default 1)')
    p.add_argument('--episodes', type=int, default=10, help='rollouts per task and cell (default 10)')
    p.add_argument('--repeats', type=int, default=3, help='timed collects per cell, the median reported (default 3)')
    p.add_argument('--seed', type=int, default=1000, help='first initial-state seed of each task (default 1000)')
    p.add_argument('--log-std', type=float, default=-2.5, help='exploration log_std (default -2.5, the shipped '
                   "config/training/policytrim_wrist_h32_dagger.yaml's)")
    p.add_argument('--max-episode-steps', type=int, default=150, help='step limit per rollout (default 150)')
    p.add_argument('--params', type=Path, default=None, help='ROS parameter file (default config/sim.yaml)')
    p.add_argument('--out', type=Path, default=Path('bench/results/rollouts'),
                   help='output folder for rollouts.json and rollouts.md (default bench/results/rollouts)')
    args = p.parse_args(argv)
    if task_suite(args.tasks) != 'arm':
        p.error(f'--tasks {args.tasks} must be embedded arm tasks')
    if min(args.episodes, args.repeats, *args.horizons, *args.envs_per_worker) < 1 or min(args.workers) < 0:
        p.error('--episodes, --repeats, --horizons and --envs-per-worker must be >= 1, --workers >= 0')
    if 'ray' in args.engine and min(args.workers) < 1:
        p.error('--engine ray needs --workers >= 1 (Ray actors)')
    return args


def digest(rollouts: list) -> str:
    """First 12 hex digits of a SHA-256 over every rollout's sampled chunks (C, H, A), in job order."""
    h = hashlib.sha256()
    for r in rollouts:
        h.update(np.ascontiguousarray(r.chunks).tobytes())
    return h.hexdigest()[:12]


def cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process and every live process it started, at
    any depth: the pool's workers, Ray's daemons and actors (read from Linux /proc; elsewhere this
    process only)."""
    stats = {}
    for entry in Path('/proc').glob('[0-9]*'):   # nothing where there is no /proc
        try:
            fields = (entry / 'stat').read_text().rsplit(')', 1)[1].split()
        except (OSError, ValueError):
            continue   # not a process, or one that just ended
        stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))   # ppid; utime + stime
    tick = os.sysconf('SC_CLK_TCK')
    total, mine = time.process_time(), {os.getpid()}
    while True:
        children = {pid for pid, (ppid, _) in stats.items() if ppid in mine and pid not in mine}
        if not children:
            return total
        total += sum(stats[pid][1] for pid in children) / tick
        mine |= children


def time_cell(pool, weights: dict, jobs: list[RolloutJob], repeats: int) -> dict:
    """``repeats`` timed ``collect`` calls of ``jobs``; the median wall-clock (s), its rates, and the outcome
    columns as means over the rollouts. Raises RuntimeError when the repeats rolled out different episodes."""
    times, cpu, digests = [], [], set()
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), cpu_seconds()
        rollouts = pool.collect(weights, jobs)
        times.append(time.perf_counter() - start)
        cpu.append(cpu_seconds() - start_cpu)
        digests.add(digest(rollouts))
    if len(digests) > 1:
        raise RuntimeError(f'the same jobs gave different rollouts (digests {sorted(digests)})')
    seconds = float(np.median(times))
    steps = sum(r.metrics.steps for r in rollouts)
    return {'rollouts': len(rollouts), 'success_rate': float(np.mean([r.metrics.success for r in rollouts])),
            'steps': steps / len(rollouts),
            'inference_calls': float(np.mean([r.metrics.inference_calls for r in rollouts])),
            'wall_clock_s': seconds, 'rollouts_per_s': len(rollouts) / seconds, 'steps_per_s': steps / seconds,
            'cpu_ms_per_rollout': 1e3 * float(np.median(cpu)) / len(rollouts), 'wall_clock_s_runs': times,
            'cpu_s_runs': cpu, 'digest': digests.pop()}


def git_commit() -> str:
    """The checkout's commit (with ``-dirty`` for uncommitted changes), or '' outside git."""
    try:
        out = subprocess.run(['git', 'describe', '--always', '--dirty', '--abbrev=7'], capture_output=True,
                             text=True, cwd=Path(__file__).parent, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ''


def main(argv=None) -> int:
    args = parse_args(argv)
    command = 'python bench/rollouts.py ' + shlex.join(sys.argv[1:] if argv is None else argv)
    env, _, safety = sim_configs(launcher.params_file(args.params), args.tasks)
    model, model_cfg, _ = load_checkpoint(resources.resolve(args.checkpoint))
    with torch.no_grad():
        model.log_std_param.fill_(args.log_std)
    weights = model.state_dict()
    setup = RolloutSetup(model_cfg, env, safety, args.max_episode_steps, suite_control_dt('arm', env),
                         tuple(args.tasks))
    rows = []
    cells = [(e, w, n) for e in args.engine for w in args.workers for n in args.envs_per_worker]
    for engine, workers, envs_per_worker in cells:
        rollouts = RolloutsConfig(engine, workers_per_node=max(workers, 1))
        with open_rollouts(dataclasses.replace(setup, envs_per_worker=envs_per_worker), workers, rollouts) as pool:
            warmup = [RolloutJob(args.tasks[0], args.seed, args.horizons[0], args.seed)] * max(workers, 1)
            pool.collect(weights, warmup)
            for h in args.horizons:
                jobs = [RolloutJob(task, args.seed + i, h, args.seed + i)
                        for task in args.tasks for i in range(args.episodes)]
                row = time_cell(pool, weights, jobs, args.repeats)
                rows.append({'engine': engine, 'workers': workers, 'envs_per_worker': envs_per_worker,
                             'n_action_steps': h, **row})
                print(f'{engine}, workers {workers}, envs / worker {envs_per_worker}, h = {h}: '
                      f'{row["rollouts_per_s"]:.2f} rollouts/s, {row["cpu_ms_per_rollout"]:.0f} CPU ms / rollout',
                      flush=True)
    meta = {'command': command, 'commit': git_commit(), 'checkpoint': args.checkpoint, 'log_std': args.log_std,
            'tasks': args.tasks, 'episodes_per_task': args.episodes, 'repeats': args.repeats, 'seed': args.seed,
            'max_episode_steps': args.max_episode_steps, 'cameras': list(env.cameras),
            'machine': f'{platform.machine()}, {platform.processor() or "cpu"}, {os.cpu_count()} CPUs',
            'torch': torch.__version__}
    if 'ray' in args.engine:
        import ray
        meta['ray'] = ray.__version__
    write_json(args.out / 'rollouts.json', {**meta, 'rows': rows})
    lines = ['# Rollouts per second of the RL rollout path (RolloutPool / RayRolloutPool .collect)', '']
    lines += [f'- {k}: {v}' for k, v in meta.items()] + ['', format_table(rows, COLUMNS, LABELS, DECIMALS), '']
    (args.out / 'rollouts.md').write_text('\n'.join(lines))
    print('\n'.join(lines))
    print(f'wrote {args.out}/rollouts.json and rollouts.md')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
