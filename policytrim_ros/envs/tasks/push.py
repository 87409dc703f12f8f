"""Push: slide the cube along the table onto a green target."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from policytrim_ros.envs.base import Task, sample_goal_xy

if TYPE_CHECKING:
    from policytrim_ros.envs.arm import ArmEnv


class PushTask(Task):
    """Get the resting cube's centre within ``success_radius`` (xy) of the target spot.

    The target is uniform in the workspace, 0.10-0.18 m from the cube.
    """

    name = 'push'
    instruction = 'push the cube to the green target'
    goal_marker = 'disc'
    cube_nominal_xy = (0.43, 0.0)
    goal_distance_range = (0.10, 0.18)
    """Distance from the cube to the target at reset (m)."""
    success_radius = 0.04
    """Largest cube-to-target xy distance that counts as solved (m)."""

    def initialize(self, env: ArmEnv, rng: np.random.Generator) -> None:
        cube_xy = self.place_cube_randomly(env, rng)
        goal_xy = sample_goal_xy(rng, cube_xy, *self.goal_distance_range)
        env.place_goal(np.array([goal_xy[0], goal_xy[1], 0.0]))

    def is_success(self, env: ArmEnv) -> bool:
        distance = np.linalg.norm(env.cube_position[:2] - env.goal_position[:2])
        return bool(distance < self.success_radius and env.cube_resting)
