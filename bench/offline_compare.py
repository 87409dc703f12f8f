"""Before / after table of ``policytrim eval`` runs on the same seeds: SR with its 95 % Wilson
interval, mean steps and inference calls (over successful episodes), and the paired outcome flips
(episodes that failed before and succeed after, and the reverse), per task and pooled.

    python bench/offline_compare.py --h 16 --runs before=runs/offline/eval-before-h16 \\
        awr=runs/offline/eval-awr-h16 --out runs/offline/compare.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from policytrim_ros.evaluation.efficiency import wilson_interval


def load(run: Path, h: int) -> dict[tuple[str, str], dict]:
    """{(task, episode_id): episode row} of an eval run's h<h>/episodes.jsonl."""
    lines = (run / f'h{h}' / 'episodes.jsonl').read_text().splitlines()
    return {(r['task'], r['episode_id']): r for r in map(json.loads, lines)}


def rows(runs: dict[str, dict], reference: str) -> list[dict]:
    tasks = sorted({task for episodes in runs.values() for task, _ in episodes})
    out = []
    for task in [*tasks, 'all']:
        for name, episodes in runs.items():
            mine = {k: r for k, r in episodes.items() if task in ('all', k[0])}
            ok = [r for r in mine.values() if r['success']]
            low, high = wilson_interval(len(ok), len(mine))
            ref = {k: r for k, r in runs[reference].items() if task in ('all', k[0])}
            if set(ref) != set(mine):
                raise ValueError(f'{name} and {reference} ran different episodes of {task}: pair them on the same seeds')
            out.append({'task': task, 'run': name, 'episodes': len(mine), 'success_rate': len(ok) / len(mine),
                        'sr_low': low, 'sr_high': high, 'steps': float(np.mean([r['steps'] for r in ok])),
                        'inference_calls': float(np.mean([r['inference_calls'] for r in ok])),
                        'gained': sum(r['success'] and not ref[k]['success'] for k, r in mine.items()),
                        'lost': sum(ref[k]['success'] and not r['success'] for k, r in mine.items())})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runs', nargs='+', required=True, metavar='NAME=DIR', help='eval output folders; the first is the reference')
    parser.add_argument('--h', type=int, required=True, help='the h the runs evaluated')
    parser.add_argument('--out', type=Path, default=None, help='JSON to write the rows to')
    args = parser.parse_args()
    runs = dict(pair.split('=', 1) for pair in args.runs)
    table = rows({name: load(Path(d), args.h) for name, d in runs.items()}, next(iter(runs)))
    print('| task | run | episodes | SR | SR 95% | steps S | inference calls | gained | lost |')
    print('|---|---|---|---|---|---|---|---|---|')
    for r in table:
        print(f"| {r['task']} | {r['run']} | {r['episodes']} | {r['success_rate']:.2f} | "
              f"[{r['sr_low']:.2f}, {r['sr_high']:.2f}] | {r['steps']:.1f} | {r['inference_calls']:.2f} | "
              f"{r['gained']} | {r['lost']} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({'h': args.h, 'runs': runs, 'rows': table}, indent=2) + '\n')


if __name__ == '__main__':
    main()
