"""The task contract of the embedded arm: the workspace, ``Task``, and the tiles of an observation's image.

A task places the cube and the goal at reset and judges success; the arm, physics, noise and
rendering belong to ``ArmEnv``. Tasks only use the small ``ArmEnv`` surface listed in ``Task``.
"""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from policytrim_ros.envs.arm import ArmEnv

WORKSPACE_LOW = np.array([0.32, -0.2])
"""Lower xy corner (m) of the table area where cubes and goals are placed."""
WORKSPACE_HIGH = np.array([0.55, 0.2])
"""Upper xy corner (m) of that area; all of it is reachable with the gripper pointing down."""


def camera_tiles(available: tuple[str, ...], wanted: tuple[str, ...]) -> tuple[int, ...]:
    """Indices of the ``wanted`` cameras among the ``available`` ones (the tiles of an image).

    Raises ValueError naming the cameras that are missing.
    """
    missing = [c for c in wanted if c not in available]
    if missing:
        raise ValueError(f'cameras {missing} are not among the rendered cameras {list(available)}')
    return tuple(available.index(c) for c in wanted)


def select_tiles(image: np.ndarray, count: int, tiles: tuple[int, ...]) -> np.ndarray:
    """The ``tiles`` (indices) of an (..., H, count * W, 3) tiled image (or stack of them), tiled
    again in that order."""
    parts = np.split(image, count, axis=-2)
    return parts[tiles[0]] if len(tiles) == 1 else np.concatenate([parts[i] for i in tiles], axis=-2)


class Task(abc.ABC):
    """One tabletop task: where things start and what counts as success.

    Subclasses set the class attributes and implement ``initialize`` and ``is_success``. They use
    ``ArmEnv.place_cube``, ``place_goal``, ``cube_position``, ``goal_position``, ``ee_position``,
    ``cube_grasped``, ``cube_resting`` and ``config.disturbances.object_position_range``.
    """

    name: ClassVar[str]
    """Registry key, e.g. 'pick_place'."""
    instruction: ClassVar[str]
    """The one language instruction of the task."""
    goal_marker: ClassVar[str]
    """Which goal geom is shown: 'sphere' (a point in the air) or 'disc' (a spot on the table)."""
    cube_nominal_xy: ClassVar[tuple[float, float]]
    """Nominal cube position (m); ``object_position_range`` randomizes around it."""

    @abc.abstractmethod
    def initialize(self, env: ArmEnv, rng: np.random.Generator) -> None:
        """Place the cube and the goal for a new episode, drawing only from ``rng``."""

    @abc.abstractmethod
    def is_success(self, env: ArmEnv) -> bool:
        """Whether the task is solved in the current simulator state."""

    def end_state(self, env: ArmEnv) -> dict[str, float | bool]:
        """Measures of the current state that say how far from solved it is (m, rounded to 1 mm).

        Evaluation records them when an episode ends; ``failure_mode`` names a failed end from them.
        """
        return {'goal_distance': round_m(np.linalg.norm(env.cube_position[:2] - env.goal_position[:2]))}

    def failure_mode(self, state: dict[str, float | bool]) -> str:
        """A short name for how an episode that ended in ``state`` (``end_state``) failed."""
        return 'off_target'

    def place_cube_randomly(self, env: ArmEnv, rng: np.random.Generator) -> np.ndarray:
        """Put the cube at its nominal spot plus the configured xy noise, yaw uniform in +-45 deg.

        Returns the cube's (2,) xy position (m).
        """
        half_width = env.config.disturbances.object_position_range
        xy = np.asarray(self.cube_nominal_xy) + rng.uniform(-half_width, half_width, size=2)
        env.place_cube(xy, yaw=rng.uniform(-np.pi / 4, np.pi / 4))
        return xy


def round_m(metres: float) -> float:
    """A length in m rounded to 1 mm (end-state logs)."""
    return round(float(metres), 3)


def sample_goal_xy(rng: np.random.Generator, cube_xy: np.ndarray, min_distance: float,
                   max_distance: float) -> np.ndarray:
    """Uniform xy in the workspace whose distance to ``cube_xy`` is in [min, max] (m); (2,)."""
    for _ in range(1000):
        xy = rng.uniform(WORKSPACE_LOW, WORKSPACE_HIGH)
        if min_distance <= np.linalg.norm(xy - cube_xy) <= max_distance:
            return xy
    raise RuntimeError(f'no goal in the workspace {min_distance}-{max_distance} m from the cube '
                       f'at {cube_xy.tolist()}')
