"""Configuration of the embedded MuJoCo arm: timing, cameras and disturbances.

The defaults switch disturbances ON on purpose: an open-loop window of h actions cannot react to a
kicked cube or to noise, so executing 16 actions blind is less efficient than executing 4.
``DisturbanceConfig.none()`` turns every disturbance off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from policytrim_ros.config import from_dict


def _check_scale_range(name: str, value: tuple[float, float]) -> tuple[float, float]:
    """Validate a (lo, hi) pair of scale factors; return it as a tuple of floats."""
    if len(value) != 2:
        raise ValueError(f'{name} ({value}) must be a (lo, hi) pair')
    lo, hi = float(value[0]), float(value[1])
    if not 0.05 <= lo <= hi <= 20.0:
        raise ValueError(f'{name} ({value}) must satisfy 0.05 <= lo <= hi <= 20')
    return lo, hi


@dataclass(frozen=True)
class DisturbanceConfig:
    """Seeded disturbances of the embedded arm; every draw comes from the episode seed.

    actuation_noise_std: stationary std of the noise added to the arm joint position targets (rad).
    actuation_noise_correlation: AR(1) coefficient c in [0, 1) of that noise, drawn once per
        control step as n_t = c * n_(t-1) + sqrt(1 - c^2) * std * eps_t (std stays the same).
    joint_noise_std: std of the Gaussian noise on the observed arm joint positions (rad).
    gripper_noise_std: std of the Gaussian noise on the observed gripper opening (m).
    image_noise_std: std of the Gaussian noise on rendered pixels (0-255 intensity units).
    object_position_range: half-width of the uniform xy randomization of the cube around its
        nominal spot (m, at most 0.1).
    friction_scale_range: (lo, hi) of the uniform factor on the cube's sliding friction.
    mass_scale_range: (lo, hi) of the uniform factor on the cube's mass and inertia.
    perturbation_probability: probability per control step of kicking the cube while it lies on
        the table and is not grasped.
    perturbation_velocity: speed of that kick (m/s), horizontal, in a direction uniform within
        +-90 deg of the direction to the workspace centre; at 0.7 m/s the cube slides 3-6 cm.
    """

    actuation_noise_std: float = 0.004
    actuation_noise_correlation: float = 0.9
    joint_noise_std: float = 0.002
    gripper_noise_std: float = 0.0005
    image_noise_std: float = 3.0
    object_position_range: float = 0.06
    friction_scale_range: tuple[float, float] = (0.7, 1.3)
    mass_scale_range: tuple[float, float] = (0.7, 1.5)
    perturbation_probability: float = 0.05
    perturbation_velocity: float = 0.7

    def __post_init__(self) -> None:
        for name in ('actuation_noise_std', 'joint_noise_std', 'gripper_noise_std', 'image_noise_std',
                     'object_position_range', 'perturbation_velocity'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f'{name} ({value}) must be finite and >= 0')
        c = self.actuation_noise_correlation
        if not 0.0 <= c < 1.0:
            raise ValueError(f'actuation_noise_correlation ({c}) must be in [0, 1)')
        p = self.perturbation_probability
        if not 0.0 <= p <= 1.0:
            raise ValueError(f'perturbation_probability ({p}) must be in [0, 1]')
        if self.object_position_range > 0.1:
            raise ValueError(f'object_position_range ({self.object_position_range}) must be <= 0.1 m '
                             'to keep the cube inside the reachable workspace')
        for name in ('friction_scale_range', 'mass_scale_range'):
            object.__setattr__(self, name, _check_scale_range(name, getattr(self, name)))

    @classmethod
    def none(cls) -> DisturbanceConfig:
        """All disturbances off: no noise, nominal cube spot and physics, no kicks."""
        return cls(actuation_noise_std=0.0, joint_noise_std=0.0, gripper_noise_std=0.0,
                   image_noise_std=0.0, object_position_range=0.0, friction_scale_range=(1.0, 1.0),
                   mass_scale_range=(1.0, 1.0), perturbation_probability=0.0)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DisturbanceConfig:
        """Build from a (YAML) mapping; an unknown key raises ConfigError with a suggestion."""
        return from_dict(cls, dict(d))


@dataclass(frozen=True)
class EnvConfig:
    """Timing, rendering and disturbances of ``ArmEnv``.

    control_dt: control period (s): one action of a chunk, one ArmEnv.step().
    physics_dt: MuJoCo timestep (s); control_dt must be a whole multiple of it.
    image_width: rendered image width of each camera (px, at most 640).
    image_height: rendered image height of each camera (px, at most 480).
    cameras: the MJCF cameras to render, in order: 'scene_camera' (fixed, front-right),
        'workspace_camera' (fixed, steeper) or 'wrist_camera' (on the hand, looking between the
        fingers). A policy sees them tiled left to right in one image (Observation.image); the
        sim_node publishes each on its own topic.
    disturbances: seeded disturbances; DisturbanceConfig.none() gives a noise-free arm.
    """

    control_dt: float = 0.1
    physics_dt: float = 0.002
    image_width: int = 96
    image_height: int = 96
    cameras: tuple[str, ...] = ('scene_camera',)
    disturbances: DisturbanceConfig = field(default_factory=DisturbanceConfig)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.physics_dt) and 0.0 < self.physics_dt <= 0.01):
            raise ValueError(f'physics_dt ({self.physics_dt}) must be in (0, 0.01] s')
        if not (math.isfinite(self.control_dt) and self.control_dt >= self.physics_dt):
            raise ValueError(f'control_dt ({self.control_dt}) must be >= physics_dt ({self.physics_dt})')
        ratio = self.control_dt / self.physics_dt
        if abs(ratio - round(ratio)) > 1e-6:
            raise ValueError(f'control_dt ({self.control_dt}) must be a whole multiple of '
                             f'physics_dt ({self.physics_dt})')
        for name, limit in (('image_width', 640), ('image_height', 480)):
            value = getattr(self, name)
            if not 16 <= value <= limit:
                raise ValueError(f'{name} ({value}) must be in [16, {limit}] px (the MJCF offscreen buffer)')
        object.__setattr__(self, 'cameras', tuple(self.cameras))
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f'cameras {list(self.cameras)} must name at least one camera, each once')
        if self.image_width * len(self.cameras) > 4096:
            raise ValueError(f'{len(self.cameras)} cameras of {self.image_width} px tile into an image wider '
                             'than 4096 px')
        if not isinstance(self.disturbances, DisturbanceConfig):
            raise ValueError(f'disturbances ({self.disturbances!r}) must be a DisturbanceConfig')

    @property
    def substeps(self) -> int:
        """Physics steps per control step."""
        return round(self.control_dt / self.physics_dt)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EnvConfig:
        """Build from a (YAML) mapping, ``disturbances`` as a nested mapping.

        An unknown key, at either level, raises ConfigError with a "did you mean" suggestion.
        """
        return from_dict(cls, dict(d))
