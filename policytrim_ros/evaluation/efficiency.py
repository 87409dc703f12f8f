"""The efficiency comparison of ``bench/efficiency.py``: baseline vs post-trained policies on the
same episodes, with the speedup Spd reported twice.

Spd (a) divides the baseline's inference calls at its default h (the paper's protocol); Spd (b)
divides them at the baseline's own best fixed h: of the h in its sweep whose success rate is
within ``tolerance`` of its best, the one with the fewest calls (the comparison a sceptical reader
asks for: maybe the baseline only needed a longer h). Both are per task, and on the pooled
episodes for 'all'. Calls and steps are means over successful episodes, as everywhere here.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from policytrim_ros import constants as C
from policytrim_ros import resources
from policytrim_ros.execution.metrics import EpisodeMetrics, speedup, summarize_by_task

SPEEDUP_DEFAULT = 'speedup_vs_default_h'
SPEEDUP_BEST = 'speedup_vs_best_h'
SR_DELTA = 'success_rate_delta'
ROS_WALL_CLOCK_S = 'ros_wall_clock_s'

COLUMNS = ['task', 'policy', C.N_ACTION_STEPS, C.CHUNK_SIZE, C.CHUNK_UTILIZATION, 'episodes', C.SUCCESS_RATE,
           SR_DELTA, C.STEPS, C.INFERENCE_CALLS, SPEEDUP_DEFAULT, SPEEDUP_BEST, C.WALL_CLOCK_S, ROS_WALL_CLOCK_S]
LABELS = {SPEEDUP_DEFAULT: 'Spd (a) vs default h', SPEEDUP_BEST: 'Spd (b) vs best h',
          SR_DELTA: 'SR - baseline', ROS_WALL_CLOCK_S: 'ROS wall-clock s'}
DECIMALS = {SPEEDUP_DEFAULT: 2, SPEEDUP_BEST: 2, SR_DELTA: 2, ROS_WALL_CLOCK_S: 2}


@dataclass(frozen=True)
class PolicySpec:
    """A learned policy to compare: a name, a checkpoint (directory or package:// URI), its h,
    how h is chosen ('fixed', or 'learned': its efficiency head's, at most n_action_steps = H), and
    the h of the tasks that have their own ((task, h) pairs: a Stage 2 run with per-task h)."""

    name: str
    checkpoint: str
    n_action_steps: int
    horizon: str = 'fixed'
    task_n_action_steps: tuple[tuple[str, int], ...] = ()

    def task_horizon(self, task: str) -> int:
        """The h it runs ``task`` at."""
        return dict(self.task_n_action_steps).get(task, self.n_action_steps)

    def horizon_groups(self, tasks: list[str]) -> dict[int, list[str]]:
        """{h: the tasks of ``tasks`` run at h}, in the order of ``tasks``."""
        groups: dict[int, list[str]] = {}
        for task in tasks:
            groups.setdefault(self.task_horizon(task), []).append(task)
        return groups

    def overrides_at(self, n_action_steps: int) -> dict:
        """policy_node parameters that run it at h = ``n_action_steps`` (with its execution.chunk_size)."""
        from policytrim_ros.policy.factory import checkpoint_chunk_size
        return {'policy.backend': 'torch', 'policy.checkpoint': self.checkpoint,
                'execution.chunk_size': checkpoint_chunk_size(self.checkpoint),
                'execution.n_action_steps': n_action_steps, 'execution.horizon': self.horizon}

    @property
    def overrides(self) -> dict:
        """policy_node parameters that run it on every task; ValueError if its tasks have their own h
        (one policy_node parameter cannot hold them: run each task with ``overrides_at``)."""
        per_task = {h for _, h in self.task_n_action_steps}
        if len(per_task) > 1 or (per_task and per_task != {self.n_action_steps}):
            raise ValueError(f'{self.name} ({self.checkpoint}) runs each task at its own h '
                             f'{dict(self.task_n_action_steps)}: run each task with its h, or name one (@h)')
        return self.overrides_at(self.n_action_steps)


def trained_execution(checkpoint: str) -> tuple[int, str, tuple[tuple[str, int], ...]] | None:
    """(h, horizon, per-task h) a checkpoint was trained to run with: a PolicyTrim Stage 2
    checkpoint's fixed h (and its h per task, if the selection chose them per task), or H and
    'learned' for one with an efficiency head; None for other checkpoints."""
    from policytrim_ros.policy.checkpoint import read_checkpoint_config
    config, metadata, _ = read_checkpoint_config(resources.resolve(checkpoint))
    if config.horizons:
        return config.chunk_size, 'learned', ()
    if metadata.get('policytrim_stage') == 2:
        trained = metadata['policytrim_config']
        per_task = tuple((str(t), int(h)) for t, h in trained.get('task_n_action_steps', {}).items())
        return int(trained['n_action_steps']), 'fixed', per_task
    return None


def parse_policy_spec(text: str) -> PolicySpec:
    """'NAME=CHECKPOINT@h' (that h on every task), or 'NAME=CHECKPOINT' for a Stage 2 checkpoint
    (h, or h per task, from its metadata) or one with an efficiency head (h learned)."""
    name, sep, rest = text.partition('=')
    checkpoint, at, h = rest.rpartition('@') if '@' in rest else (rest, '', '')
    if not (sep and name and checkpoint) or (at and not (h.isdigit() and int(h) >= 1)):
        raise ValueError(f'expected NAME=CHECKPOINT@h (e.g. policytrim=models/policytrim-wrist@16), got {text!r}')
    if at:
        return PolicySpec(name, checkpoint, int(h))
    trained = trained_execution(checkpoint)
    if trained is None:
        raise ValueError(f'{text!r}: {checkpoint} is neither a PolicyTrim Stage 2 checkpoint nor one with an '
                         'efficiency head, so it has no trained h; write NAME=CHECKPOINT@h')
    return PolicySpec(name, checkpoint, *trained)


RUN_FOLDERS = re.compile(r'^(last|raw|checkpoints|iter_\d+|stage[12])$')
"""Folder names a training run puts under its own name; a checkpoint's name keeps the run's name."""


def checkpoint_name(checkpoint: str) -> str:
    """A short name of a checkpoint for folder names: its folder's name, with the run folders
    below a run's own joined on ('package://policytrim_ros/models/policytrim-wrist' ->
    'policytrim-wrist', 'runs/policytrim-ft/stage2/last' -> 'policytrim-ft-stage2-last')."""
    parts = [p for p in checkpoint.replace('\\', '/').split('/') if p and p != '.']
    tail = []
    while parts:
        tail.insert(0, parts.pop())
        if not RUN_FOLDERS.match(tail[0]):
            break
    return '-'.join(tail) or 'checkpoint'


def comparison_name(baseline: str, methods: list[PolicySpec]) -> str:
    """'<baseline>-vs-<method>[+<method>...]' of the checkpoints compared (not of the labels, which
    every run calls 'policytrim')."""
    return f"{checkpoint_name(baseline)}-vs-{'+'.join(checkpoint_name(m.checkpoint) for m in methods)}"


def other_comparison_in(out: Path, baseline: str, methods: list[PolicySpec]) -> str | None:
    """The comparison whose results ``out`` already holds if it is another one than this (its
    efficiency.json names other checkpoints), else None: a rerun of a comparison may overwrite it."""
    path = Path(out) / 'efficiency.json'
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
        held = meta['baseline'], [PolicySpec(n, m['checkpoint'], 0) for n, m in meta['methods'].items()]
    except (ValueError, KeyError, TypeError, AttributeError):
        return f'{path} (unreadable)'
    if comparison_name(*held) == comparison_name(baseline, methods):
        return None
    return comparison_name(*held)


def best_fixed_h(summaries: dict[int, dict], tolerance: float = 0.02) -> int:
    """The h with the fewest inference calls among those within ``tolerance`` of the best SR.

    summaries: {h: summary} of one task (or the pool), as ``summarize`` returns. Ties in calls go
    to the higher SR, then the smaller h.
    """
    if not summaries:
        raise ValueError('best_fixed_h needs at least one h')
    best = max(s[C.SUCCESS_RATE] for s in summaries.values())
    qualified = [h for h, s in summaries.items()
                 if s[C.SUCCESS_RATE] >= best - tolerance - 1e-12 and not math.isnan(s[C.INFERENCE_CALLS])]
    if not qualified:
        raise ValueError(f'no h of {sorted(summaries)} has a successful episode')
    return min(qualified, key=lambda h: (summaries[h][C.INFERENCE_CALLS], -summaries[h][C.SUCCESS_RATE], h))


def comparison_rows(baseline: dict[int, list[EpisodeMetrics]], default_h: int,
                    methods: dict[str, list[EpisodeMetrics]], tolerance: float = 0.02,
                    baseline_name: str = 'baseline') -> list[dict]:
    """Rows per task (and 'all'): the baseline at its default h, at its best fixed h, and each method.

    baseline: the baseline's sweep, {h: episodes}; it must contain ``default_h``.
    methods: {name: episodes} of each post-trained policy on the same seeds, on all of the
        baseline's tasks or some (ablations on one task get no 'all' row).
    """
    if default_h not in baseline:
        raise ValueError(f'default h {default_h} is not in the baseline sweep {sorted(baseline)}')
    by_h = {h: summarize_by_task(episodes) for h, episodes in baseline.items()}
    by_method = {name: summarize_by_task(episodes) for name, episodes in methods.items()}
    rows = []
    for task in by_h[default_h]:
        best_h = best_fixed_h({h: s[task] for h, s in by_h.items()}, tolerance)
        reference = by_h[default_h][task]
        entries = [(f'{baseline_name} (default h)', reference), (f'{baseline_name} (best h)', by_h[best_h][task])]
        entries += [(name, s[task]) for name, s in by_method.items()
                    if task in s and (task != 'all' or s.keys() == by_h[default_h].keys())]  # 'all' of the same tasks
        for name, s in entries:
            rows.append({'task': task, 'policy': name, **s,
                         SR_DELTA: s[C.SUCCESS_RATE] - reference[C.SUCCESS_RATE],
                         SPEEDUP_DEFAULT: speedup(reference[C.INFERENCE_CALLS], s[C.INFERENCE_CALLS]),
                         SPEEDUP_BEST: speedup(by_h[best_h][task][C.INFERENCE_CALLS], s[C.INFERENCE_CALLS])})
    return rows


# -- the success-vs-calls curve (bench/horizon_curve.py) ---------------------------------------------
SR_LOW, SR_HIGH = 'success_rate_low', 'success_rate_high'
CURVE_COLUMNS = ['task', 'policy', 'horizon', 'episodes', C.SUCCESS_RATE, SR_LOW, SR_HIGH, C.STEPS,
                 C.INFERENCE_CALLS, C.CHUNK_UTILIZATION, SPEEDUP_DEFAULT, SPEEDUP_BEST, SR_DELTA]
CURVE_LABELS = {SR_LOW: 'SR 95% low', SR_HIGH: 'SR 95% high', SPEEDUP_DEFAULT: 'Spd (a)',
                SPEEDUP_BEST: 'Spd (b)', SR_DELTA: 'SR - best h'}
CURVE_DECIMALS = {SR_LOW: 2, SR_HIGH: 2, SPEEDUP_DEFAULT: 2, SPEEDUP_BEST: 2, SR_DELTA: 2}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95 % for z = 1.96); (nan, nan) for n = 0."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def curve_rows(cells: dict[tuple[str, str], list[EpisodeMetrics]], baseline: str, default_h: str,
               tolerance: float = 0.02) -> list[dict]:
    """Rows per task (and 'all') and cell: SR with its Wilson interval, steps, calls, Spd (a)
    against the baseline at ``default_h`` and Spd (b) against the baseline's best fixed h (of its
    cells' h, ``best_fixed_h``), and SR minus the best fixed h's.

    cells: {(policy, horizon label): episodes on the same seeds}; the baseline's fixed-h cells are
    ``(baseline, str(h))``, and ``(baseline, default_h)`` must be one of them.
    """
    summaries = {key: summarize_by_task(episodes) for key, episodes in cells.items()}
    fixed = {int(label): s for (policy, label), s in summaries.items() if policy == baseline and label.isdigit()}
    if (baseline, default_h) not in summaries:
        raise ValueError(f'the baseline has no cell at the default h {default_h}: {sorted(cells)}')
    rows = []
    for task in summaries[(baseline, default_h)]:
        best_h = best_fixed_h({h: s[task] for h, s in fixed.items()}, tolerance)
        best, reference = fixed[best_h][task], summaries[(baseline, default_h)][task]
        for (policy, label), by_task in summaries.items():
            s = by_task[task]
            successes = sum(e.success for e in cells[(policy, label)] if task == 'all' or e.task == task)
            low, high = wilson_interval(successes, s['episodes'])
            rows.append({'task': task, 'policy': policy, 'horizon': label, **s, SR_LOW: low, SR_HIGH: high,
                         SPEEDUP_DEFAULT: speedup(reference[C.INFERENCE_CALLS], s[C.INFERENCE_CALLS]),
                         SPEEDUP_BEST: speedup(best[C.INFERENCE_CALLS], s[C.INFERENCE_CALLS]),
                         SR_DELTA: s[C.SUCCESS_RATE] - best[C.SUCCESS_RATE], 'best_h': best_h})
    return rows
