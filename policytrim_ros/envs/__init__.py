"""Embedded MuJoCo arm, its tasks and scripted experts; no ROS imports.

Rendering is headless: ``MUJOCO_GL`` defaults to 'egl' here, before anything imports mujoco
(set it to 'osmesa' in the environment to override).
"""
import os

os.environ.setdefault('MUJOCO_GL', 'egl')

from policytrim_ros.envs.arm import SCENE_PATH, ArmEnv  # noqa: E402
from policytrim_ros.envs.base import (ARM_JOINT_NAMES, ENVIRONMENT_STATE_LAYOUT,  # noqa: E402
                                      JOINT_NAMES, WORKSPACE_HIGH, WORKSPACE_LOW, Observation, Task)
from policytrim_ros.envs.config import DisturbanceConfig, EnvConfig  # noqa: E402
from policytrim_ros.envs.experts import ScriptedExpert  # noqa: E402
from policytrim_ros.envs.registry import (TASKS, UnknownTaskError, make_task,  # noqa: E402
                                          task_for_instruction, task_names)

__all__ = [
    'ARM_JOINT_NAMES', 'ENVIRONMENT_STATE_LAYOUT', 'JOINT_NAMES', 'SCENE_PATH', 'TASKS', 'WORKSPACE_HIGH',
    'WORKSPACE_LOW', 'ArmEnv', 'DisturbanceConfig', 'EnvConfig', 'Observation', 'ScriptedExpert', 'Task',
    'UnknownTaskError', 'make_task', 'task_for_instruction', 'task_names',
]
