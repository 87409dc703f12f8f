"""Sweep reports: one row per (task, h) with the named metrics and Spd against a reference h,
written as JSON, a markdown table and a PNG plot (SR, steps and inference calls vs h)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from policytrim_ros import constants as C
from policytrim_ros.execution import metrics as M

ROW_COLUMNS = ['task', C.N_ACTION_STEPS, C.CHUNK_SIZE, C.CHUNK_UTILIZATION, 'episodes', C.SUCCESS_RATE,
               C.STEPS, C.INFERENCE_CALLS, C.SPEEDUP, C.WALL_CLOCK_S]


def sweep_rows(results: dict[int, list[M.EpisodeMetrics]], reference_h: int) -> list[dict]:
    """Rows (task-major, then h) with Spd = calls at ``reference_h`` / calls at h, per task."""
    if reference_h not in results:
        raise ValueError(f'reference h {reference_h} is not in the sweep {sorted(results)}')
    by_h = {h: M.summarize_by_task(episodes) for h, episodes in results.items()}
    rows = []
    for task in by_h[reference_h]:
        reference = by_h[reference_h][task][C.INFERENCE_CALLS]
        for h in sorted(results):
            s = dict(by_h[h][task])
            s[C.SPEEDUP] = M.speedup(reference, s[C.INFERENCE_CALLS])
            rows.append({'task': task, **s})
    return rows


def failure_rows(results: dict[int, list[tuple[M.EpisodeMetrics, dict]]]) -> list[dict]:
    """Rows (task-major, then h) counting the failed episodes by their end state's failure_mode."""
    rows = []
    tasks = list(dict.fromkeys(m.task for episodes in results.values() for m, _ in episodes))
    for task in tasks:
        for h in sorted(results):
            failed = [state for m, state in results[h] if m.task == task and not m.success]
            modes = Counter(state.get('failure_mode', 'unknown') for state in failed)
            rows.append({'task': task, C.N_ACTION_STEPS: h, 'failed': len(failed),
                         'failure_modes': dict(sorted(modes.items(), key=lambda kv: (-kv[1], kv[0])))})
    return rows


def write_episodes(results: dict[int, list[tuple[M.EpisodeMetrics, dict]]], out_dir: str | Path) -> None:
    """One ``h<h>/episodes.jsonl`` per h: each episode's metrics plus its ``end_state``."""
    for h, episodes in results.items():
        log = M.JsonlLog(Path(out_dir) / f'h{h}' / 'episodes.jsonl')
        log.path.unlink(missing_ok=True)
        for metrics, state in episodes:
            log.append(metrics, end_state=state)


def write_report(rows: list[dict], out_dir: str | Path, title: str, meta: dict,
                 failures: list[dict] | None = None) -> dict[str, Path]:
    """Write sweep.json, sweep.md and sweep.png into ``out_dir``; return their paths.

    ``failures`` (``failure_rows``) adds a table of how the failed episodes ended.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {'json': out / 'sweep.json', 'markdown': out / 'sweep.md', 'plot': out / 'sweep.png'}
    M.write_json(paths['json'], {'title': title, **meta, 'rows': rows, **({'failures': failures} if failures else {})})
    lines = [f'# {title}', '']
    lines += [f'- {k}: {v}' for k, v in meta.items()]
    lines += ['', M.format_table(rows, ROW_COLUMNS), '']
    if failures:
        shown = [{**r, 'failure_modes': ', '.join(f'{k} {n}' for k, n in r['failure_modes'].items()) or '-'}
                 for r in failures]
        lines += ['How the failed episodes ended (`end_state` in h<h>/episodes.jsonl):', '',
                  M.format_table(shown, ['task', C.N_ACTION_STEPS, 'failed', 'failure_modes'],
                                 labels={'failure_modes': 'failure modes'}), '']
    paths['markdown'].write_text('\n'.join(lines))
    plot_sweep(rows, paths['plot'], title)
    return paths


def plot_sweep(rows: list[dict], path: Path, title: str) -> None:
    """Three panels against h: success rate, steps S, inference calls (one line per task)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels = [(C.SUCCESS_RATE, 'success rate'), (C.STEPS, 'steps S (successful episodes)'),
              (C.INFERENCE_CALLS, 'inference calls per episode')]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    tasks = list(dict.fromkeys(r['task'] for r in rows))
    h_values = sorted({r[C.N_ACTION_STEPS] for r in rows})
    for ax, (key, label) in zip(axes, panels):
        for task in tasks:
            pts = [(r[C.N_ACTION_STEPS], r[key]) for r in rows if r['task'] == task]
            ax.plot(*zip(*pts), marker='o', label=task, linestyle='--' if task == 'all' else '-')
        ax.set_xscale('log', base=2)
        ax.set_xticks(h_values, [str(h) for h in h_values])
        ax.set_xlabel('executed length h')
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.02, 1.02)
    if any(r[C.INFERENCE_CALLS] > 0 for r in rows):  # NaN (no successful episode) compares False
        axes[2].set_yscale('log')
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
