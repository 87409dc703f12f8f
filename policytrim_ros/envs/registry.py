"""Tasks of the embedded arm by name, and by instruction."""
from __future__ import annotations

import difflib

from policytrim_ros.envs.base import Task
from policytrim_ros.envs.tasks.pick_place import PickPlaceTask
from policytrim_ros.envs.tasks.push import PushTask
from policytrim_ros.envs.tasks.reach import ReachTask

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (ReachTask, PushTask, PickPlaceTask)}
"""Task name -> class."""


class UnknownTaskError(KeyError, ValueError):
    """A task name that is not registered; the message suggests the closest one."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


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


def _normalize(text: str) -> str:
    return ' '.join(text.lower().split())


def task_for_instruction(instruction: str) -> str | None:
    """The task whose instruction matches (case and whitespace ignored), or None."""
    wanted = _normalize(instruction)
    for name, cls in TASKS.items():
        if _normalize(cls.instruction) == wanted:
            return name
    return None
