"""``policytrim train --stage all``: Stage 1, the between-stage selection and Stage 2 as one
resumable run (DESIGN.md section 2, Algorithm 1 of the paper).

Layout of ``out_dir``:

    stage1/          the Stage 1 run (``train_policytrim``), from ``init``
    selection.json   the between-stage sweep and what it chose for Stage 2
    stage2/          the Stage 2 run, from ``stage1/last``

The selection evaluates the baseline (``init``) at its own h and the Stage 1 policy at every h of
Gamma, deterministically (chunk means), on the same ``cfg.selection.episodes`` initial states per task.
Stage 2 runs at the largest h whose success rate (pooled over the tasks) is within
``selection.tolerance`` of the baseline's (and, with ``selection.task_tolerance``, each task's
within that of the baseline's on the task), or with ``selection.per_task`` each task at the
largest h that keeps that task within ``task_tolerance`` of the baseline's SR on it, with S_base = alpha * the Stage 1 policy's mean
successful steps at that h, one budget per task (our tasks differ 3-4x in length, so one pooled
budget would leave the long tasks without any step-saving signal). The selection seeds are their
own range, disjoint from demonstrations (0-999), evaluation (1000 on) and RL rollouts (100000 on),
so the benchmark never scores a policy on the episodes that picked its h.

With ``resume``, finished parts are kept: a complete stage is not rerun, an interrupted one
continues from its last checkpoint, and an existing selection.json is reused.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from policytrim_ros import constants as C
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.factory import suite_control_dt, task_suite
from policytrim_ros.envs.metaworld_config import MetaWorldConfig
from policytrim_ros.execution.config import SafetyConfig
from policytrim_ros.execution.metrics import summarize, summarize_by_task, write_json
from policytrim_ros.policy.factory import checkpoint_chunk_size
from policytrim_ros.training.stages import SelectionConfig, stage2_horizon, step_budget, task_stage2_horizons
from policytrim_ros.training.trainer import PolicyTrimConfig, stage_horizons, train_policytrim


def _sweep(cfg: PolicyTrimConfig, checkpoint: str, horizons: tuple[int, ...], selection: SelectionConfig,
           env: EnvConfig, safety: SafetyConfig, metaworld: MetaWorldConfig, progress: bool) -> dict[int, list]:
    from policytrim_ros.evaluation.sweep import SweepConfig, run_sweep
    from policytrim_ros.policy.factory import PolicyConfig
    sweep = SweepConfig(policy=PolicyConfig(backend='torch', checkpoint=checkpoint), tasks=cfg.tasks,
                        n_action_steps=horizons, chunk_size=checkpoint_chunk_size(checkpoint),
                        episodes=selection.episodes, seed=selection.seed,
                        control_dt=suite_control_dt(task_suite(cfg.tasks), env),
                        max_episode_steps=cfg.max_episode_steps, workers=max(cfg.workers, 1), env=env,
                        metaworld=metaworld, safety=safety)
    return run_sweep(sweep, progress=progress)


def select_stage2(cfg: PolicyTrimConfig, stage1: str, selection: SelectionConfig, env: EnvConfig,
                  safety: SafetyConfig, progress: bool = True, metaworld: MetaWorldConfig | None = None) -> dict:
    """Evaluate the baseline at its h and ``stage1`` over Gamma; return the Stage 2 plan.

    The plan holds ``n_action_steps`` (the pooled rule's h), ``task_n_action_steps`` ({task: h},
    with ``selection.per_task``; else empty) and ``step_budget`` ({task: S_base at the task's h})
    plus every number it was derived from. ValueError when no h keeps the pooled success rate (and
    ``per_task`` is off), or a task has no success at its h.
    """
    chunk_size = checkpoint_chunk_size(stage1)
    horizons = stage_horizons(replace(cfg, stage=1), chunk_size)[cfg.tasks[0]]
    metaworld = metaworld or MetaWorldConfig()
    baseline = _sweep(cfg, cfg.init, (cfg.base_n_action_steps,), selection, env, safety, metaworld, progress)
    candidates = _sweep(cfg, stage1, horizons, selection, env, safety, metaworld, progress)
    baseline_sr = summarize(baseline[cfg.base_n_action_steps])[C.SUCCESS_RATE]
    baseline_by_task = summarize_by_task(baseline[cfg.base_n_action_steps])
    by_h = {h: summarize_by_task(episodes) for h, episodes in candidates.items()}
    task_rates = {h: {t: s[t][C.SUCCESS_RATE] for t in cfg.tasks} for h, s in by_h.items()}
    baseline_rates = {t: baseline_by_task[t][C.SUCCESS_RATE] for t in cfg.tasks}
    task_h = {}
    if selection.per_task:
        task_h = task_stage2_horizons(task_rates, baseline_rates, selection.task_tolerance
                                      if selection.task_tolerance is not None else selection.tolerance)
    try:
        h = stage2_horizon({h: s['all'][C.SUCCESS_RATE] for h, s in by_h.items()}, baseline_sr, selection.tolerance,
                           task_rates, baseline_rates, None if selection.per_task else selection.task_tolerance)
    except ValueError:
        if not selection.per_task:
            raise
        h = min(horizons)   # recorded only: every task runs at its own h
    budgets = {}
    for task in cfg.tasks:
        steps = [e.steps for e in candidates[task_h.get(task, h)] if e.task == task and e.success]
        if not steps:
            raise ValueError(f'the Stage 1 policy never solved {task} at h = {task_h.get(task, h)} in '
                             f'{selection.episodes} selection episodes: no step budget; train Stage 1 longer or '
                             'drop the task')
        budgets[task] = round(step_budget(steps, selection.alpha), 2)

    def row(s: dict) -> dict:
        return {k: s[k] for k in (C.SUCCESS_RATE, C.STEPS, C.INFERENCE_CALLS)}
    return {'n_action_steps': h, 'task_n_action_steps': task_h, 'step_budget': budgets,
            'baseline': {'checkpoint': cfg.init, 'n_action_steps': cfg.base_n_action_steps,
                         'by_task': {t: row(s) for t, s in baseline_by_task.items()}},
            'stage1': {'checkpoint': stage1,
                       'by_h': {str(k): {t: row(s) for t, s in v.items()} for k, v in by_h.items()}},
            'selection': {'episodes': selection.episodes, 'seed': selection.seed,
                          'tolerance': selection.tolerance, 'task_tolerance': selection.task_tolerance,
                          'per_task': selection.per_task, 'alpha': selection.alpha}}


def run_policytrim(cfg: PolicyTrimConfig, env: EnvConfig | None = None, safety: SafetyConfig | None = None,
                   resume: bool = False, progress: bool = True, metaworld: MetaWorldConfig | None = None) -> Path:
    """Stage 1 -> selection -> Stage 2 under ``cfg.out_dir``; return the final checkpoint folder.

    ``cfg`` holds the settings shared by both stages; its ``stage``, ``n_action_steps``,
    ``step_budget`` and ``out_dir`` are set per stage here; Stage 2 keeps Stage 1's learned
    exploration std (``log_std`` applies to Stage 1 only).
    """
    env = env or EnvConfig()
    safety = safety or SafetyConfig()
    root = Path(cfg.out_dir)
    if root.exists() and any(root.iterdir()) and not resume:
        raise FileExistsError(f'{root} already holds a run; pass resume=True (--resume) or pick another out_dir')
    stage1 = train_policytrim(replace(cfg, stage=1, n_action_steps=0, step_budget={}, out_dir=str(root / 'stage1')),
                              env, safety, resume=resume, progress=progress, metaworld=metaworld)
    plan_path = root / 'selection.json'
    if resume and plan_path.exists():
        plan = json.loads(plan_path.read_text())
    else:
        plan = select_stage2(cfg, str(stage1), cfg.selection, env, safety, progress, metaworld)
        write_json(plan_path, plan)
    if progress:
        budgets = ', '.join(f'{t} {s:g}' for t, s in plan['step_budget'].items())
        task_h = ', '.join(f'{t} {h}' for t, h in plan.get('task_n_action_steps', {}).items())
        print(f"stage 2: h = {task_h or plan['n_action_steps']}, S_base = {budgets} (from {plan_path})")
    stage2 = replace(cfg, stage=2, init=str(stage1), log_std=None, n_action_steps=int(plan['n_action_steps']),
                     task_n_action_steps={t: int(h) for t, h in plan.get('task_n_action_steps', {}).items()},
                     step_budget={t: float(s) for t, s in plan['step_budget'].items()},
                     out_dir=str(root / 'stage2'))
    return train_policytrim(stage2, env, safety, resume=resume, progress=progress, metaworld=metaworld)

