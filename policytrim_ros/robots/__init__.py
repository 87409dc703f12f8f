"""The robots as both their simulators (``envs``) and their policies (``policy``) see them.

A leaf of the package: action columns, the layout of the privileged ``environment_state``, the
scene files and the tasks' names and instructions, one module per robot (``arm``: the embedded
MuJoCo arm; ``metaworld``: Meta-World's Sawyer, with its 50-task table in ``metaworld_tasks``). The
scripted experts are policies that plan on the same scenes, so they read these instead of importing
the envs.
"""


class UnknownTaskError(KeyError, ValueError):
    """A task name that is not registered; the message suggests the closest one."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])
