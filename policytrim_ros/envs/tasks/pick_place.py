"""Pick and place: lift the cube and put it down on a green target."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from policytrim_ros.envs.base import Task, round_m, sample_goal_xy
from policytrim_ros.robots.arm import TASK_INSTRUCTIONS

if TYPE_CHECKING:
    from policytrim_ros.envs.arm import ArmEnv


class PickPlaceTask(Task):
    """Solved when the cube rests on the table within ``success_radius`` (xy) of the target and
    the gripper has let go of it (a cube still held above or on the target does not count).

    The target is uniform in the workspace, 0.12-0.25 m from the cube, so pushing it there is
    rarely an option.
    """

    name = 'pick_place'
    instruction = TASK_INSTRUCTIONS[name]
    goal_marker = 'disc'
    cube_nominal_xy = (0.43, -0.05)
    goal_distance_range = (0.12, 0.25)
    """Distance from the cube to the target at reset (m)."""
    success_radius = 0.04
    """Largest cube-to-target xy distance that counts as placed (m)."""
    lifted_height = 0.02
    """A cube that has been this high above the table (m) counts as lifted."""

    def initialize(self, env: ArmEnv, rng: np.random.Generator) -> None:
        cube_xy = self.place_cube_randomly(env, rng)
        goal_xy = sample_goal_xy(rng, cube_xy, *self.goal_distance_range)
        env.place_goal(np.array([goal_xy[0], goal_xy[1], 0.0]))

    def is_success(self, env: ArmEnv) -> bool:
        distance = np.linalg.norm(env.cube_position[:2] - env.goal_position[:2])
        return bool(distance < self.success_radius and env.cube_resting and not env.cube_grasped)

    def end_state(self, env: ArmEnv) -> dict[str, float | bool]:
        return {**super().end_state(env), 'cube_lift': round_m(env.cube_lift),
                'cube_max_lift': round_m(env.cube_max_lift), 'cube_grasped': env.cube_grasped,
                'cube_was_grasped': env.cube_was_grasped}

    def failure_mode(self, state: dict[str, float | bool]) -> str:
        """holding_on_target / holding_off_target (still gripped at the end); never_grasped (the
        fingers never closed on it); not_lifted (gripped, never lifted ``lifted_height``); dropped
        (lifted, let go away from the target); on_target_not_resting (let go over the target, not
        yet still on the table)."""
        on_target = state['goal_distance'] < self.success_radius
        if state['cube_grasped']:
            return 'holding_on_target' if on_target else 'holding_off_target'
        if not state['cube_was_grasped']:
            return 'never_grasped'
        if state['cube_max_lift'] < self.lifted_height:
            return 'not_lifted'
        return 'on_target_not_resting' if on_target else 'dropped'
