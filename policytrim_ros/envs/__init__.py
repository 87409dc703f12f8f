"""Embedded MuJoCo arm (``ArmEnv``) and its tasks, and the Meta-World adapter; no ROS imports.

Rendering is headless: ``MUJOCO_GL`` defaults to 'egl' (see ``policytrim_ros/__init__.py``).
"""
from policytrim_ros.envs.arm import ArmEnv
from policytrim_ros.envs.base import WORKSPACE_HIGH, WORKSPACE_LOW, Task
from policytrim_ros.envs.config import DisturbanceConfig, EnvConfig
from policytrim_ros.envs.registry import TASKS, make_task, task_names

__all__ = ['TASKS', 'WORKSPACE_HIGH', 'WORKSPACE_LOW', 'ArmEnv', 'DisturbanceConfig', 'EnvConfig', 'Task',
           'make_task', 'task_names']
