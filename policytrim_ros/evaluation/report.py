"""Sweep reports: one row per (task, h) with the named metrics and Spd against a reference h,
written as JSON, a markdown table and a PNG plot (SR, steps and inference calls vs h)."""
from __future__ import annotations

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


def write_report(rows: list[dict], out_dir: str | Path, title: str, meta: dict) -> dict[str, Path]:
    """Write sweep.json, sweep.md and sweep.png into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {'json': out / 'sweep.json', 'markdown': out / 'sweep.md', 'plot': out / 'sweep.png'}
    M.write_json(paths['json'], {'title': title, **meta, 'rows': rows})
    lines = [f'# {title}', '']
    lines += [f'- {k}: {v}' for k, v in meta.items()]
    lines += ['', M.format_table(rows, ROW_COLUMNS), '']
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
