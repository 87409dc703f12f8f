"""The embedded arm: its joints, its privileged state, its MJCF scene and its tasks' instructions.

``envs.ArmEnv`` simulates the scene; the scripted expert (``policy.arm_expert``) plans on the same
scene and recognises a task by its instruction.
"""
from __future__ import annotations

from pathlib import Path

ARM_JOINT_NAMES: tuple[str, ...] = ('joint1', 'joint2', 'joint3', 'joint4', 'joint5', 'joint6')
"""The six revolute arm joints, base to tool (rad)."""
JOINT_NAMES: tuple[str, ...] = ARM_JOINT_NAMES + ('gripper',)
"""Controlled joints, the A = 7 columns of every action: six arm joints (rad), then the opening of
each finger (m, 0 = closed, 0.04 = open)."""

ENVIRONMENT_STATE_LAYOUT: dict[str, slice] = {
    'cube_position': slice(0, 3),
    'cube_quaternion': slice(3, 7),
    'goal_position': slice(7, 10),
}
"""Slices of ``Observation.environment_state`` (10,): cube position (m, world), cube orientation
(unit quaternion w, x, y, z) and goal position (m, world)."""

SCENE_PATH = Path(__file__).parent / 'assets' / 'arm_scene.xml'
"""The MJCF scene shared by ``ArmEnv`` and ``ScriptedExpert``."""

TASK_INSTRUCTIONS: dict[str, str] = {
    'reach': 'reach the red target',
    'push': 'push the cube to the green target',
    'pick_place': 'put the cube on the green target',
}
"""Task name -> its one language instruction, in registration order (``envs.registry.TASKS``)."""


def _normalize(text: str) -> str:
    return ' '.join(text.lower().split())


def task_for_instruction(instruction: str) -> str | None:
    """The task whose instruction matches (case and whitespace ignored), or None."""
    wanted = _normalize(instruction)
    for name, text in TASK_INSTRUCTIONS.items():
        if _normalize(text) == wanted:
            return name
    return None
