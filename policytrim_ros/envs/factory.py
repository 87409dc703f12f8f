"""Task names -> the env that runs them: the embedded arm (``ArmEnv``) or Meta-World (``MetaWorldEnv``).

The embedded arm's tasks are the registry's ('reach', 'push', 'pick_place'); Meta-World's are its
50 v3 tasks (``robots.metaworld_tasks``: 'reach-v3', 'door-open-v3', ...). Both envs have the same
surface (reset, observe, set_trajectory, step, joint_names, control_dt), but their actions differ
(joint targets vs hand deltas), so one call takes the tasks of one suite only. ``metaworld`` is imported only when a
Meta-World env is made.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from policytrim_ros.config import suggest
from policytrim_ros.envs.arm import ArmEnv
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.metaworld_config import MetaWorldConfig
from policytrim_ros.envs.registry import TASKS
from policytrim_ros.robots import UnknownTaskError
from policytrim_ros.robots.arm import JOINT_NAMES
from policytrim_ros.robots.metaworld import ACTION_NAMES as METAWORLD_ACTION_NAMES
from policytrim_ros.robots.metaworld import CONTROL_DT as METAWORLD_CONTROL_DT
from policytrim_ros.robots.metaworld_tasks import METAWORLD_TASKS, closest_tasks

if TYPE_CHECKING:
    from policytrim_ros.envs.metaworld import MetaWorldEnv

SUITES: tuple[str, ...] = ('arm', 'metaworld')
"""Task suites: the embedded arm's tasks, and the 50 Meta-World 3.1.1 v3 tasks."""


def task_suite(tasks: Sequence[str]) -> str:
    """'arm' or 'metaworld': the one suite all of ``tasks`` belong to.

    Raises UnknownTaskError (with a "did you mean" over both suites and the closest Meta-World
    names) for an unknown name, and ValueError for no tasks or for tasks of both suites.
    """
    if isinstance(tasks, str) or not tasks:
        raise ValueError(f'tasks ({tasks!r}) must be a non-empty list of task names')
    by_suite: dict[str, list[str]] = {}
    for task in tasks:
        if task in TASKS:
            by_suite.setdefault('arm', []).append(task)
        elif task in METAWORLD_TASKS:
            by_suite.setdefault('metaworld', []).append(task)
        else:
            raise UnknownTaskError(f"unknown task '{task}'{suggest(str(task), [*TASKS, *METAWORLD_TASKS])} "
                                   f'(embedded arm: {list(TASKS)}; {closest_tasks(task)})')
    if len(by_suite) > 1:
        raise ValueError(f"tasks {list(tasks)} mix embedded arm tasks {by_suite['arm']} and Meta-World tasks "
                         f"{by_suite['metaworld']}: one env runs one suite, so run them separately")
    return next(iter(by_suite))


def task_step_limit(task: str, max_episode_steps: int) -> int:
    """Control steps an episode of ``task`` gets: ``max_episode_steps``, or the task's own
    ``step_limit`` where that is longer (the Meta-World tasks whose expert needs more steps, see
    ``robots.metaworld_tasks``). Any other task gets ``max_episode_steps`` as it is."""
    spec = METAWORLD_TASKS.get(task)
    if spec is None or spec.step_limit is None:
        return max_episode_steps
    return max(max_episode_steps, spec.step_limit)


def suite_control_dt(suite: str, env_config: EnvConfig | None = None) -> float:
    """Seconds per control step of ``suite``'s env: ``env_config.control_dt`` or Meta-World's."""
    if suite == 'metaworld':
        return METAWORLD_CONTROL_DT
    return (env_config or EnvConfig()).control_dt


def suite_joint_names(suite: str) -> tuple[str, ...]:
    """The action columns of ``suite``'s env: the arm's joints or Meta-World's ``dx dy dz grip``."""
    return METAWORLD_ACTION_NAMES if suite == 'metaworld' else JOINT_NAMES


def make_env(tasks: Sequence[str], env_config: EnvConfig | None = None,
             metaworld_config: MetaWorldConfig | None = None) -> ArmEnv | MetaWorldEnv:
    """The env that runs ``tasks``: ``ArmEnv(env_config)`` or ``MetaWorldEnv(metaworld_config)``.

    Each config applies to its own suite only (None = its defaults). Raises like ``task_suite``.
    """
    if task_suite(tasks) == 'metaworld':
        from policytrim_ros.envs.metaworld import MetaWorldEnv
        return MetaWorldEnv(tasks[0], metaworld_config)
    return ArmEnv(env_config)
