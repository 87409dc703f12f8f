"""Reach: bring the gripper to a red target floating above the table."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from policytrim_ros.envs.base import WORKSPACE_HIGH, WORKSPACE_LOW, Task, round_m
from policytrim_ros.robots.arm import TASK_INSTRUCTIONS

if TYPE_CHECKING:
    from policytrim_ros.envs.arm import ArmEnv


class ReachTask(Task):
    """Move ``ee_site`` (between the fingertips) to within ``success_radius`` of the target.

    The target is uniform in the workspace at a height of [0.08, 0.25] m; the cube is a
    distractor left on the table.
    """

    name = 'reach'
    instruction = TASK_INSTRUCTIONS[name]
    goal_marker = 'sphere'
    cube_nominal_xy = (0.42, 0.0)
    goal_height_range = (0.08, 0.25)
    """Target height above the table (m)."""
    success_radius = 0.03
    """Largest ee-to-target distance that counts as reached (m)."""

    def initialize(self, env: ArmEnv, rng: np.random.Generator) -> None:
        self.place_cube_randomly(env, rng)
        xy = rng.uniform(WORKSPACE_LOW, WORKSPACE_HIGH)
        env.place_goal(np.array([xy[0], xy[1], rng.uniform(*self.goal_height_range)]))

    def is_success(self, env: ArmEnv) -> bool:
        return bool(np.linalg.norm(env.ee_position - env.goal_position) < self.success_radius)

    def end_state(self, env: ArmEnv) -> dict[str, float | bool]:
        return {'goal_distance': round_m(np.linalg.norm(env.ee_position - env.goal_position))}

    def failure_mode(self, state: dict[str, float | bool]) -> str:
        return 'missed_target'
