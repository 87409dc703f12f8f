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
largest h that keeps that task within ``task_tolerance`` of the baseline's SR on it, with S_base =
alpha * the Stage 1 policy's mean successful steps at that h, one budget per task (our tasks differ
3-4x in length, so one pooled budget would leave the long tasks without any step-saving signal). The selection seeds are their
own range, disjoint from demonstrations (0-999), evaluation (1000 on) and RL rollouts (100000 on),
so the benchmark never scores a policy on the episodes that picked its h.

With ``resume``, finished parts are kept: a complete stage is not rerun, an interrupted one
continues from its last checkpoint, and an existing selection.json is reused; if only the selection
rule changed since (tolerances, per_task, alpha) and Stage 2 has not started, the plan is derived
again from the sweep it recorded (``resumed_plan``).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from policytrim_ros import constants as C
from policytrim_ros.config import to_dict
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.factory import suite_control_dt, task_suite
from policytrim_ros.envs.metaworld_config import MetaWorldConfig
from policytrim_ros.execution.config import SafetyConfig
from policytrim_ros.execution.metrics import summarize_by_task, write_json
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


def plan_stage2(cfg: PolicyTrimConfig, selection: SelectionConfig, baseline: dict, by_h: dict) -> dict:
    """The Stage 2 plan from a between-stage sweep's rows: the h (pooled, and per task with
    ``selection.per_task``) and each task's S_base = alpha * mean successful steps at its h.

    baseline: {task or 'all': row} of the baseline at its h; by_h: {h: {task or 'all': row}} of the
    Stage 1 policy; a row holds success_rate and steps (the mean over successful episodes). With
    ``per_task`` the pooled rule's h is only recorded (the h of tasks outside the map; Gamma's
    smallest when none qualifies) and ``below_tolerance`` lists the tasks no h kept within
    tolerance (they run at their best-SR h). ValueError when no h keeps the pooled rate (``per_task``
    off), or a task has no success at its h.
    """
    task_rates = {h: {t: rows[t][C.SUCCESS_RATE] for t in cfg.tasks} for h, rows in by_h.items()}
    base_rates = {t: baseline[t][C.SUCCESS_RATE] for t in cfg.tasks}
    tolerance = selection.task_tolerance if selection.task_tolerance is not None else selection.tolerance
    task_h = task_stage2_horizons(task_rates, base_rates, tolerance) if selection.per_task else {}
    below = [t for t, h in task_h.items() if task_rates[h][t] < base_rates[t] - tolerance - 1e-12]
    pooled = {h: rows['all'][C.SUCCESS_RATE] for h, rows in by_h.items()}
    try:
        h = stage2_horizon(pooled, baseline['all'][C.SUCCESS_RATE], selection.tolerance, task_rates, base_rates,
                           None if selection.per_task else selection.task_tolerance)
    except ValueError:
        if not selection.per_task:
            raise
        h = min(by_h)
    budgets = {}
    for task in cfg.tasks:
        steps = by_h[task_h.get(task, h)][task][C.STEPS]
        if not steps > 0:   # nan: no successful episode
            raise ValueError(f'the Stage 1 policy never solved {task} at h = {task_h.get(task, h)} in '
                             f'{selection.episodes} selection episodes: no step budget; train Stage 1 longer or '
                             'drop the task')
        budgets[task] = round(step_budget([steps], selection.alpha), 2)
    return {'n_action_steps': h, 'task_n_action_steps': task_h, 'below_tolerance': below, 'step_budget': budgets,
            'selection': to_dict(selection)}


def select_stage2(cfg: PolicyTrimConfig, stage1: str, selection: SelectionConfig, env: EnvConfig,
                  safety: SafetyConfig, progress: bool = True, metaworld: MetaWorldConfig | None = None) -> dict:
    """Evaluate the baseline at its h and ``stage1`` over Gamma; return the Stage 2 plan
    (``plan_stage2``) with every number it was derived from."""
    chunk_size = checkpoint_chunk_size(stage1)
    horizons = stage_horizons(replace(cfg, stage=1), chunk_size)[cfg.tasks[0]]
    metaworld = metaworld or MetaWorldConfig()
    baseline = _sweep(cfg, cfg.init, (cfg.base_n_action_steps,), selection, env, safety, metaworld, progress)
    candidates = _sweep(cfg, stage1, horizons, selection, env, safety, metaworld, progress)

    def rows(episodes: list) -> dict:
        return {t: {k: s[k] for k in (C.SUCCESS_RATE, C.STEPS, C.INFERENCE_CALLS)}
                for t, s in summarize_by_task(episodes).items()}
    baseline_rows = rows(baseline[cfg.base_n_action_steps])
    by_h = {h: rows(episodes) for h, episodes in candidates.items()}
    return {**plan_stage2(cfg, selection, baseline_rows, by_h),
            'baseline': {'checkpoint': cfg.init, 'n_action_steps': cfg.base_n_action_steps, 'by_task': baseline_rows},
            'stage1': {'checkpoint': stage1, 'by_h': {str(k): v for k, v in by_h.items()}}}


def resumed_plan(cfg: PolicyTrimConfig, plan: dict, root: Path) -> dict:
    """An existing selection.json for ``cfg``: as it is when it was made with ``cfg.selection``; re-planned
    from its recorded sweep when only the rule changed (tolerances, per_task, alpha) and Stage 2 has
    not started; ValueError when it cannot serve (another sweep, or Stage 2 trained on its plan)."""
    made = {'per_task': False, **plan['selection']}
    wanted = to_dict(cfg.selection)
    if made == wanted:
        return plan
    if (made['episodes'], made['seed']) != (wanted['episodes'], wanted['seed']):
        raise ValueError(f"{root / 'selection.json'} swept {made['episodes']} episodes from seed {made['seed']}; "
                         f"the config asks {wanted['episodes']} from {wanted['seed']}: move it (and stage2/) away "
                         'to sweep again, or restore the config')
    if (root / 'stage2').exists():
        raise ValueError(f"stage2/ trained on {root / 'selection.json'}'s plan (selection {made}); the config now "
                         f'asks {wanted}: move stage2/ away to re-plan from the recorded sweep, or restore the config')
    by_h = {int(h): rows for h, rows in plan['stage1']['by_h'].items()}
    print(f'selection: re-planning from the recorded sweep with {wanted} (was {made})')
    return {**plan, **plan_stage2(cfg, cfg.selection, plan['baseline']['by_task'], by_h)}


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
    stage1 = train_policytrim(replace(cfg, stage=1, n_action_steps=0, task_n_action_steps={}, step_budget={},
                                      out_dir=str(root / 'stage1')),
                              env, safety, resume=resume, progress=progress, metaworld=metaworld)
    plan_path = root / 'selection.json'
    if resume and plan_path.exists():
        plan = json.loads(plan_path.read_text())
        replanned = resumed_plan(cfg, plan, root)
        if replanned is not plan:
            write_json(plan_path, replanned)
            plan = replanned
    else:
        plan = select_stage2(cfg, str(stage1), cfg.selection, env, safety, progress, metaworld)
        write_json(plan_path, plan)
    if plan.get('below_tolerance'):
        print(f"selection: no h kept {plan['below_tolerance']} within the tolerance of the baseline's SR; they run "
              'at the h of their best SR')
    if progress:
        budgets = ', '.join(f'{t} {s:g}' for t, s in plan['step_budget'].items())
        task_h = ', '.join(f'{t} {h}' for t, h in plan.get('task_n_action_steps', {}).items())
        print(f"stage 2: h = {task_h or plan['n_action_steps']}, S_base = {budgets} (from {plan_path})")
    stage2 = replace(cfg, stage=2, init=str(stage1), log_std=None, n_action_steps=int(plan['n_action_steps']),
                     task_n_action_steps={t: int(h) for t, h in plan.get('task_n_action_steps', {}).items()},
                     step_budget={t: float(s) for t, s in plan['step_budget'].items()},
                     out_dir=str(root / 'stage2'))
    return train_policytrim(stage2, env, safety, resume=resume, progress=progress, metaworld=metaworld)

