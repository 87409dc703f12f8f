"""The embedded tasks' scripted experts as a policy backend (demo, data collection, references)."""
from __future__ import annotations

import numpy as np

from policytrim_ros.envs.base import JOINT_NAMES, Observation
from policytrim_ros.envs.experts import ScriptedExpert
from policytrim_ros.envs.registry import task_for_instruction, task_names
from policytrim_ros.policy.base import PolicyInputError, PolicyMetadata


class ScriptedExpertPolicy:
    """Emits H future expert actions planned from the current (noisy) joint state.

    The task is recognised from the instruction, as a VLA would; the expert also reads the
    privileged environment state (cube and goal poses), so it needs ``uses_environment_state``.
    """

    def __init__(self, chunk_size: int, control_dt: float):
        self.metadata = PolicyMetadata(name='expert', chunk_size=chunk_size, joint_names=JOINT_NAMES,
                                       image_size=None, uses_environment_state=True)
        self.control_dt = control_dt
        self._expert = ScriptedExpert()

    def reset(self) -> None:
        """The expert is stateless."""

    def predict_action_chunk(self, observation: Observation) -> np.ndarray:
        task = task_for_instruction(observation.instruction)
        if task is None:
            raise PolicyInputError(f'the scripted expert knows the tasks {task_names()}; instruction '
                                   f'{observation.instruction!r} matches none of them')
        return self._expert.chunk(task, observation.joint_positions, observation.environment_state,
                                  self.metadata.chunk_size, self.control_dt)
