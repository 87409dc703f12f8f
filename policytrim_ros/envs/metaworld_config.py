"""Configuration of the Meta-World adapter: rendering, episode length, disturbances in Meta-World units.

Meta-World actions are in [-1, 1] (1 unit = 1 cm of hand motion per step), not joint targets, so
``MetaWorldDisturbanceConfig`` keeps ``DisturbanceConfig``'s fields and rules with Meta-World
units and defaults. The defaults are ON and tuned so that the scripted expert keeps >= 0.9
success at h = 1 while longer open-loop windows lose success and take more steps (H = 16, 30
seeds, 200-step limit: pick-place 1.00 / 59 steps at h = 1 -> 0.90 / 72 at h = 16, push 1.00 / 67
-> 0.97 / 80). Stronger noise mostly breaks the expert itself: at the prototype's 0.12 it drops
to 0.83-0.87 at h = 1 (its half-closed fingers tip the puck over). ``MetaWorldDisturbanceConfig.none()``
switches everything off; then H = 16 chunks replay the step-wise expert exactly. The tasks and
action columns are ``robots.metaworld``'s; the teleop style in the same units is
``operators.MetaWorldTeleopConfig``. Nothing here imports ``metaworld``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from policytrim_ros.config import from_dict, suggest
from policytrim_ros.envs.config import DisturbanceConfig

CAMERAS = ('corner', 'corner2', 'corner3', 'corner4', 'topview', 'behindGripper', 'gripperPOV', 'workspace')
"""Cameras of the Sawyer scenes, plus ``workspace``: ours, see ``WORKSPACE_VIEW``."""

WORKSPACE_VIEW = {'lookat': (0.0, 0.72, 0.12), 'distance': 0.75, 'azimuth': 130.0, 'elevation': -35.0}
"""The ``workspace`` camera (a MuJoCo free camera; m and deg): it frames the hand's start, the
objects and the goals of reach-v3, push-v3 and pick-place-v3, so a 4.5 cm puck is about 6 px wide
at 96 px where ``corner`` (the whole table and robot) shows it at 2-3 px. It was chosen for those
three; in the other 47 scenes it shows the hand, the objects and the fixtures too, but the tallest
fixtures (the shelf, the coffee machine, the door's cabinet) run out of its top edge (128 px renders
of seed 1001, checked by eye)."""


@dataclass(frozen=True)
class MetaWorldDisturbanceConfig(DisturbanceConfig):
    """``DisturbanceConfig`` with Meta-World units and defaults (same fields, same rules).

    actuation_noise_std: stationary std of the AR(1) noise on the xyz action (action units, i.e.
        cm of mocap motion per step), added before Meta-World's clip to [-1, 1].
    actuation_noise_correlation: AR(1) coefficient, as for the arm.
    joint_noise_std: std of the noise on the observed hand position (m).
    gripper_noise_std: std of the noise on the observed gripper opening (Meta-World's 0-1 scale).
    image_noise_std: pixel noise (0-255 units).
    object_position_range: half-width (m) of a uniform xy offset added to the task variant's object
        spot (push, pick-place) or goal spot (reach), on top of Meta-World's own 50 variants, and
        clipped to the range Meta-World samples those spots from.
    friction_scale_range, mass_scale_range: factors on the object's sliding friction and mass.
    perturbation_probability, perturbation_velocity: per-step chance and speed (m/s) of kicking the
        object while it lies on the table with the fingers >= 6 cm away; at 0.7 m/s the puck slides
        1-2 cm (faster kicks can tip it over).
    The object-side fields (object_position_range, the scale ranges, the kicks) act on reach-v3,
    push-v3 and pick-place-v3 only (``robots.metaworld_tasks.CORE_TASKS``); the other 47 tasks run
    Meta-World's own variants with the hand-side disturbances (actuation, sensor and image noise).
    """

    actuation_noise_std: float = 0.06
    joint_noise_std: float = 0.002
    gripper_noise_std: float = 0.01
    object_position_range: float = 0.03
    perturbation_probability: float = 0.03
    perturbation_velocity: float = 0.7


@dataclass(frozen=True)
class MetaWorldConfig:
    """Rendering, episode length, task variants and disturbances of ``MetaWorldEnv``.

    camera: camera to render, one of ``CAMERAS``; cameras mounted upside down (the corner ones)
        are turned upright (rotated 180 deg); ``workspace`` (the default) is our close view of the
        task region. Measured at 96 px, same BC recipe on efficient demos (20 episodes per task,
        h = 4): SR 0.90 / 0.80 / 0.75 (reach / push / pick-place) from ``workspace``, 0.55 / 0.15 /
        0.0 from ``corner`` (0.3 / 0.2 / 0.1 on teleop demos).
    image_width, image_height: rendered image size (px, at most 640 x 480).
    goal_marker_radius: radius (m) the goal site is drawn with. Meta-World draws it at 0.02 m, 2-3 px
        at 96 px from ``corner``: a BC policy did not learn where the goal is (SR 0.2 on reach-v3).
        Sites have no physics; only the image changes. Applies to the site named 'goal', which 32
        of the 50 scenes have (the others mark their goal otherwise or not at all).
    max_path_length: control steps after which the env refuses to step (Meta-World's truncation).
    benchmark_seed: seed of ``metaworld.MT1``, i.e. which 50 task variants episode seeds pick from.
    disturbances: ``MetaWorldDisturbanceConfig()`` (on) or ``MetaWorldDisturbanceConfig.none()``.
    """

    camera: str = 'workspace'
    image_width: int = 96
    image_height: int = 96
    goal_marker_radius: float = 0.04
    max_path_length: int = 500
    benchmark_seed: int = 0
    disturbances: MetaWorldDisturbanceConfig = field(default_factory=MetaWorldDisturbanceConfig)

    def __post_init__(self) -> None:
        if self.camera not in CAMERAS:
            raise ValueError(f"camera ('{self.camera}') must be one of {list(CAMERAS)}"
                             f'{suggest(self.camera, CAMERAS)}')
        for name, limit in (('image_width', 640), ('image_height', 480)):
            value = getattr(self, name)
            if not 16 <= value <= limit:
                raise ValueError(f'{name} ({value}) must be in [16, {limit}] px (the offscreen buffer)')
        if not 0.0 < self.goal_marker_radius <= 0.1:
            raise ValueError(f'goal_marker_radius ({self.goal_marker_radius}) must be in (0, 0.1] m')
        if self.max_path_length < 1:
            raise ValueError(f'max_path_length ({self.max_path_length}) must be >= 1')
        if self.benchmark_seed < 0:
            raise ValueError(f'benchmark_seed ({self.benchmark_seed}) must be >= 0')
        if not isinstance(self.disturbances, MetaWorldDisturbanceConfig):
            raise ValueError(f'disturbances ({self.disturbances!r}) must be a MetaWorldDisturbanceConfig '
                             '(Meta-World units), e.g. MetaWorldDisturbanceConfig.none()')

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MetaWorldConfig:
        """Build from a (YAML) mapping; unknown keys raise ConfigError with a suggestion."""
        return from_dict(cls, dict(d))
