"""Tasks of the embedded arm by name (their instructions: ``robots.arm.TASK_INSTRUCTIONS``)."""
from __future__ import annotations

import difflib

from policytrim_ros.envs.base import Task
from policytrim_ros.envs.tasks.pick_place import PickPlaceTask
from policytrim_ros.envs.tasks.push import PushTask
from policytrim_ros.envs.tasks.reach import ReachTask
from policytrim_ros.robots import UnknownTaskError
from policytrim_ros.robots.arm import TASK_INSTRUCTIONS

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (ReachTask, PushTask, PickPlaceTask)}
"""Task name -> class, in the order of ``robots.arm.TASK_INSTRUCTIONS`` (what the scripted expert plans)."""
if tuple(TASKS) != tuple(TASK_INSTRUCTIONS):
    raise RuntimeError(f'the tasks {list(TASKS)} must be those of robots.arm.TASK_INSTRUCTIONS, in its order '
                       f'{list(TASK_INSTRUCTIONS)}')


def task_names() -> tuple[str, ...]:
    """Registered task names, in registration order."""
    return tuple(TASKS)


def make_task(name: str) -> Task:
    """A new instance of the task called ``name``; raises UnknownTaskError with a suggestion."""
    try:
        return TASKS[name]()
    except KeyError:
        close = difflib.get_close_matches(str(name), TASKS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ''
        raise UnknownTaskError(f"unknown task '{name}'{hint} (tasks: {list(TASKS)})") from None
