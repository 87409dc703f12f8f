"""Push: slide the cube along the table onto a green target."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from policytrim_ros.envs.base import Task, round_m, sample_goal_xy
from policytrim_ros.robots.arm import TASK_INSTRUCTIONS

if TYPE_CHECKING:
    from policytrim_ros.envs.arm import ArmEnv


class PushTask(Task):
    """Get the resting cube's centre within ``success_radius`` (xy) of the target spot.

    The target is uniform in the workspace, 0.10-0.18 m from the cube.
    """

    name = 'push'
    instruction = TASK_INSTRUCTIONS[name]
    goal_marker = 'disc'
    cube_nominal_xy = (0.43, 0.0)
    goal_distance_range = (0.10, 0.18)
    """Distance from the cube to the target at reset (m)."""
    success_radius = 0.04
    """Largest cube-to-target xy distance that counts as solved (m)."""

    untouched_distance = 0.01
    """A cube moved less than this (m, xy) counts as never pushed."""

    def initialize(self, env: ArmEnv, rng: np.random.Generator) -> None:
        cube_xy = self.place_cube_randomly(env, rng)
        self.start_cube_xy = cube_xy
        goal_xy = sample_goal_xy(rng, cube_xy, *self.goal_distance_range)
        env.place_goal(np.array([goal_xy[0], goal_xy[1], 0.0]))

    def is_success(self, env: ArmEnv) -> bool:
        distance = np.linalg.norm(env.cube_position[:2] - env.goal_position[:2])
        return bool(distance < self.success_radius and env.cube_resting)

    def end_state(self, env: ArmEnv) -> dict[str, float | bool]:
        return {**super().end_state(env),
                'cube_moved': round_m(np.linalg.norm(env.cube_position[:2] - self.start_cube_xy)),
                'cube_resting': env.cube_resting}

    def failure_mode(self, state: dict[str, float | bool]) -> str:
        if state['cube_moved'] < self.untouched_distance:
            return 'cube_untouched'
        if state['goal_distance'] < self.success_radius:
            return 'on_target_moving'    # the step limit came while the cube still slid
        return 'off_target'
