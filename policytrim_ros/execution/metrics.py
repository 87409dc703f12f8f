"""Per-episode efficiency metrics, their summaries, the speedup Spd, and text tables.

Conventions (the paper's, made explicit): steps S and inference calls are means over *successful*
episodes (a failed episode's length only measures the step limit); success rate is over all
episodes; Spd = inference calls of the baseline / inference calls of the method.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from policytrim_ros import constants as C


@dataclass(frozen=True)
class EpisodeMetrics:
    """One finished episode; the same fields as the EpisodeStats message and a JSONL line.

    weights_version: the version of the policy's weights the episode ran (0 = as loaded at start-up;
        a hot reload sets it). sampling_seed: the seed of the chunks' exploration noise, -1 when the
        policy ran its means (deployment and evaluation).
    """

    episode_id: str
    task: str
    instruction: str
    success: bool
    steps: int
    inference_calls: int
    n_action_steps: int
    chunk_size: int
    chunk_utilization: float
    wall_clock_s: float
    end_reason: str
    weights_version: int = 0
    sampling_seed: int = -1

    def __post_init__(self):
        if self.end_reason not in C.END_REASONS:
            raise ValueError(f'end_reason {self.end_reason!r} must be one of {C.END_REASONS}')

    def to_dict(self) -> dict:
        return asdict(self)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def summarize(episodes: list[EpisodeMetrics]) -> dict:
    """Aggregate episodes (of one task, or all) into the named metrics."""
    ok = [e for e in episodes if e.success]
    return {
        'episodes': len(episodes),
        C.SUCCESS_RATE: _mean(float(e.success) for e in episodes),
        C.STEPS: _mean(e.steps for e in ok),
        C.N_ACTION_STEPS: _mean(e.n_action_steps for e in episodes),
        C.CHUNK_SIZE: _mean(e.chunk_size for e in episodes),
        C.CHUNK_UTILIZATION: _mean(e.chunk_utilization for e in episodes),
        C.INFERENCE_CALLS: _mean(e.inference_calls for e in ok),
        C.WALL_CLOCK_S: _mean(e.wall_clock_s for e in episodes),
    }


def summarize_by_task(episodes: list[EpisodeMetrics]) -> dict[str, dict]:
    """{task: summary} in first-seen task order, plus 'all'."""
    tasks = list(dict.fromkeys(e.task for e in episodes))
    out = {t: summarize([e for e in episodes if e.task == t]) for t in tasks}
    out['all'] = summarize(episodes)
    return out


def speedup(baseline_calls: float, method_calls: float) -> float:
    """Spd = calls_baseline / calls_method (NaN when either is undefined or the method made none)."""
    if not (baseline_calls > 0 and method_calls > 0):
        return math.nan
    return baseline_calls / method_calls


# Decimal places per metric in tables (other floats: 3 significant digits).
_DECIMALS = {C.SUCCESS_RATE: 2, C.STEPS: 1, C.INFERENCE_CALLS: 1, C.CHUNK_UTILIZATION: 2, C.SPEEDUP: 2,
             C.WALL_CLOCK_S: 2, C.N_ACTION_STEPS: 0, C.CHUNK_SIZE: 0}


def _fmt(value, column: str = '', decimals: dict | None = None) -> str:
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, float):
        if math.isnan(value):
            return '-'
        digits = {**_DECIMALS, **(decimals or {})}.get(column)
        return f'{value:.{digits}f}' if digits is not None else f'{value:.3g}'
    return str(value)


def format_table(rows: list[dict], columns: list[str], labels: dict | None = None,
                 decimals: dict | None = None) -> str:
    """Markdown table; column headers use METRIC_LABELS (and ``labels``) where a column is a metric
    name; floats get the metric's decimal places (``decimals`` adds or overrides some)."""
    header = [{**C.METRIC_LABELS, **(labels or {})}.get(c, c) for c in columns]
    cells = [[_fmt(r.get(c, ''), c, decimals) for c in columns] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(header)]
    line = lambda vals: '| ' + ' | '.join(v.ljust(w) for v, w in zip(vals, widths)) + ' |'  # noqa: E731
    sep = '|' + '|'.join('-' * (w + 2) for w in widths) + '|'
    return '\n'.join([line(header), sep] + [line(r) for r in cells])


EPISODE_COLUMNS = ['episode_id', 'task', C.SUCCESS, C.STEPS, C.N_ACTION_STEPS, C.CHUNK_SIZE,
                   C.CHUNK_UTILIZATION, C.INFERENCE_CALLS, C.WALL_CLOCK_S, C.END_REASON]
SUMMARY_COLUMNS = ['task', 'episodes', C.SUCCESS_RATE, C.STEPS, C.N_ACTION_STEPS, C.CHUNK_SIZE,
                   C.CHUNK_UTILIZATION, C.INFERENCE_CALLS, C.WALL_CLOCK_S]


def write_json(path: str | Path, data) -> None:
    """Write JSON with NaN (an undefined mean) as null, so strict parsers read it."""
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(data), indent=2) + '\n')


class JsonlLog:
    """Appends one JSON line per finished episode."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, episode: EpisodeMetrics, **extra) -> None:
        """Append ``episode``'s fields plus ``extra`` ones (e.g. ``end_state``) as one line."""
        with self.path.open('a') as f:
            f.write(json.dumps({**episode.to_dict(), **extra}) + '\n')


def read_jsonl(path: str | Path) -> list[EpisodeMetrics]:
    """Episodes from a JSONL log written by JsonlLog (fields other than EpisodeMetrics' are skipped)."""
    names = {f.name for f in fields(EpisodeMetrics)}
    lines = Path(path).read_text().splitlines()
    return [EpisodeMetrics(**{k: v for k, v in json.loads(line).items() if k in names})
            for line in lines if line.strip()]
