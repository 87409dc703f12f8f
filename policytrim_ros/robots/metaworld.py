"""Meta-World's Sawyer: its action columns, its tasks (``metaworld_tasks``), the privileged state and raw envs.

``envs.metaworld.MetaWorldEnv`` runs these tasks; the Meta-World expert (``policy.metaworld_expert``) plans
on a private raw env of the task. ``metaworld`` itself is imported only when a raw env is made.
"""
from __future__ import annotations

import pickle
from functools import lru_cache
from typing import Any

import mujoco

# the task table has its own module; these names stay importable from here
from policytrim_ros.robots.metaworld_tasks import METAWORLD_TASKS, MetaWorldTask, check_task  # noqa: F401

ACTION_NAMES: tuple[str, ...] = ('dx', 'dy', 'dz', 'grip')
"""The A = 4 action columns: hand mocap delta xyz (1 unit = 1 cm per step), gripper effort."""
CONTROL_DT = 0.0125
"""Seconds per Meta-World step: frame_skip (5) x timestep (2.5 ms), the same in all 50 Sawyer scenes."""

MW_OBS_DIM = 39
"""Meta-World's observation: hand xyz, gripper opening, object poses, previous frame, goal xyz."""
STATE_SPEC = (mujoco.mjtState.mjSTATE_QPOS | mujoco.mjtState.mjSTATE_QVEL | mujoco.mjtState.mjSTATE_ACT
              | mujoco.mjtState.mjSTATE_WARMSTART | mujoco.mjtState.mjSTATE_CTRL
              | mujoco.mjtState.mjSTATE_MOCAP_POS | mujoco.mjtState.mjSTATE_MOCAP_QUAT)
"""The ``mj_getState`` spec appended to ``environment_state``: enough to replay the physics."""


@lru_cache(maxsize=None)
def mt1_variants(task: str, benchmark_seed: int) -> tuple[type, tuple[dict[str, Any], ...]]:
    """(env class, the MT1 variants' unpickled data) of ``task``; building MT1 takes ~0.6 s."""
    import metaworld
    mt1 = metaworld.MT1(task, seed=benchmark_seed)
    return mt1.train_classes[task], tuple(pickle.loads(t.data) for t in mt1.train_tasks)


def make_metaworld_env(task: str, benchmark_seed: int = 0, max_path_length: int = 500):
    """A reset Meta-World env of ``task`` (goal observable), set to its first MT1 variant."""
    import metaworld
    env_cls, variants = mt1_variants(task, benchmark_seed)
    env = env_cls()
    env.max_path_length = max_path_length
    env.set_task(metaworld.Task(env_name=task, data=pickle.dumps(variants[0])))
    env.reset()
    return env
