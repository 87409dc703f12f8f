"""``VLAConfig``: sizes of the compact Vision-Language-Action model, plus named presets."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from policytrim_ros.config import ConfigError, from_dict, suggest, to_dict
from policytrim_ros.robots.arm import JOINT_NAMES


@dataclass(frozen=True)
class VLAConfig:
    """Shape of a ``VLAModel``: image -> feature tokens + keypoint token, instruction -> token,
    state -> token, H learned action queries.

    image_height: rows of the RGB input image (pixels); a multiple of 8.
    image_width: columns of the RGB input image (pixels); a multiple of 8. With several cameras the
        input is their images tiled left to right, each image_width / N wide.
    vision_channels: output channels of the three stride-2 stages of the convolutional vision
        encoder (trained from scratch); the feature map is (image_height / 8, image_width / 8).
    vision_keypoints: K spatial-softmax keypoints read off that feature map; their (x, y)
        expectations form one token (image coordinates, what a reaching policy needs most).
    vision_token_pool: side of the average pooling of the feature map into patch tokens, so there
        are (image_height / 8 / pool) * (image_width / 8 / pool) of them; divides both sides.
    text_embedding_dim: size of the instruction embedding computed outside the model (384 for MiniLM).
    state_dim: proprioceptive state size (joint positions, rad or m).
    action_offsets: True (joint position targets): the head predicts each target as an offset from
        the current state, normalized by the statistics of ``action - state``. False (velocity-like
        commands, e.g. Meta-World's end-effector deltas): it predicts the action itself,
        normalized by the statistics of the actions.
    action_dim: A, actions per step (joint position targets, rad or m).
    chunk_size: H, steps per predicted chunk (one learned query per step).
    hidden_size: width of the action transformer (features per token).
    num_layers: pre-norm transformer encoder layers of the action transformer.
    num_heads: attention heads of the action transformer; divides hidden_size.
    log_std_init: initial log standard deviation of the Gaussian policy, in normalized delta units.
    log_std_min: lower clamp of that log standard deviation (normalized delta units).
    log_std_max: upper clamp of that log standard deviation (normalized delta units).
    joint_names: (A,) the name of each action dimension, in order.
    action_low: (A,) lowest target the model outputs per dimension (raw units), or () for none.
        ``train-bc`` sets it to the smallest target the demonstrations commanded: a regression
        head overshoots a saturated command (a gripper closed to 0.0 m comes out at -0.01 m),
        and what no demonstration did is no target to send to a robot.
    action_high: (A,) highest target per dimension (raw units), or () for none.
    cameras: the cameras the training images came from, in tile order (their Image frame_ids, e.g.
        ['scene_camera', 'wrist_camera']), or () for one unnamed camera. Not architecture: the input
        contract, like image size and joint names; policy_node subscribes to one image topic per
        camera and warns when the live images name other cameras.
    horizons: the executed lengths h the efficiency head chooses from, per call (increasing, each in
        [1, chunk_size]), or () for a model without the head (``VLAModel.with_horizon_head``).
    horizon_hidden_size: width of the efficiency head's two hidden layers.
    """

    image_height: int = 96
    image_width: int = 96
    vision_channels: tuple[int, ...] = (32, 64, 128)
    vision_keypoints: int = 32
    vision_token_pool: int = 2
    text_embedding_dim: int = 384
    state_dim: int = 7
    action_offsets: bool = True
    action_dim: int = 7
    chunk_size: int = 16
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    log_std_init: float = -1.0
    log_std_min: float = -5.0
    log_std_max: float = 1.0
    joint_names: tuple[str, ...] = JOINT_NAMES
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    cameras: tuple[str, ...] = ()
    horizons: tuple[int, ...] = ()
    horizon_hidden_size: int = 64

    def __post_init__(self):
        positive = ('image_height', 'image_width', 'vision_keypoints', 'vision_token_pool',
                    'text_embedding_dim', 'state_dim', 'action_dim', 'chunk_size', 'hidden_size',
                    'num_layers', 'num_heads', 'horizon_hidden_size')
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} ({value!r}) must be an integer >= 1')
        object.__setattr__(self, 'vision_channels', tuple(self.vision_channels))
        if len(self.vision_channels) != 3 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1
                                                 for c in self.vision_channels):
            raise ValueError(f'vision_channels ({list(self.vision_channels)}) must be 3 integers >= 1, '
                             'one per stride-2 stage')
        for name in ('image_height', 'image_width'):
            side = getattr(self, name)
            if side % 8 or (side // 8) % self.vision_token_pool:
                raise ValueError(f'{name} ({side}) must be a multiple of 8 * vision_token_pool '
                                 f'({8 * self.vision_token_pool}): the encoder downsamples by 8, then pools')
        object.__setattr__(self, 'cameras', tuple(self.cameras))
        if len(set(self.cameras)) != len(self.cameras) or not all(self.cameras):
            raise ValueError(f'cameras {list(self.cameras)} must be non-empty names, each once')
        if self.cameras and self.image_width % len(self.cameras):
            raise ValueError(f'image_width ({self.image_width}) must split into {len(self.cameras)} equal tiles, '
                             f'one per camera {list(self.cameras)}')
        if self.hidden_size % self.num_heads:
            raise ValueError(f'hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})')
        if self.action_offsets and self.state_dim != self.action_dim:
            raise ValueError(f'state_dim ({self.state_dim}) must equal action_dim ({self.action_dim}) when '
                             'action_offsets predicts targets as offsets from the state')
        if len(self.joint_names) != self.action_dim:
            raise ValueError(f'joint_names has {len(self.joint_names)} names {list(self.joint_names)} but '
                             f'action_dim is {self.action_dim}')
        if len(set(self.joint_names)) != len(self.joint_names):
            raise ValueError(f'joint_names {list(self.joint_names)} must be unique')
        object.__setattr__(self, 'action_low', tuple(float(x) for x in self.action_low))
        object.__setattr__(self, 'action_high', tuple(float(x) for x in self.action_high))
        if self.action_low or self.action_high:
            if len(self.action_low) != self.action_dim or len(self.action_high) != self.action_dim:
                raise ValueError(f'action_low ({len(self.action_low)} values) and action_high '
                                 f'({len(self.action_high)} values) must both have action_dim ({self.action_dim})')
            for i, (lo, hi) in enumerate(zip(self.action_low, self.action_high)):
                if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                    raise ValueError(f'action_low[{i}] ({lo}) must be <= action_high[{i}] ({hi}), both finite '
                                     f'(dimension {self.joint_names[i]})')
        object.__setattr__(self, 'horizons', tuple(self.horizons))
        if self.horizons and (len(self.horizons) < 2 or any(isinstance(h, bool) or not isinstance(h, int)
                                                            for h in self.horizons)
                              or list(self.horizons) != sorted(set(self.horizons))
                              or not 1 <= self.horizons[0] <= self.horizons[-1] <= self.chunk_size):
            raise ValueError(f'horizons {list(self.horizons)} must be >= 2 increasing integers in [1, chunk_size '
                             f'({self.chunk_size})] (the executed lengths the efficiency head picks from), or []')
        for name in ('log_std_init', 'log_std_min', 'log_std_max'):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f'{name} ({getattr(self, name)}) must be finite')
        if not self.log_std_min <= self.log_std_init <= self.log_std_max:
            raise ValueError(f'log_std_init ({self.log_std_init}) must be in [log_std_min ({self.log_std_min}), '
                             f'log_std_max ({self.log_std_max})]')

    @property
    def feature_size(self) -> tuple[int, int]:
        """(rows, columns) of the encoder's feature map."""
        return self.image_height // 8, self.image_width // 8

    @property
    def num_patches(self) -> int:
        """Patch tokens per image (the pooled feature map)."""
        rows, columns = self.feature_size
        return (rows // self.vision_token_pool) * (columns // self.vision_token_pool)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the input image (pixels)."""
        return self.image_height, self.image_width

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (tuples become lists)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VLAConfig:
        """Inverse of ``to_dict``; unknown keys and rule violations raise ``ConfigError``."""
        return from_dict(cls, values)


PRESETS: dict[str, VLAConfig] = {
    # 1.56 M parameters (bench/inference.py measures the latency of each preset).
    'vla-2m': VLAConfig(num_layers=6),
    # 9.54 M parameters.
    'vla-10m': VLAConfig(vision_channels=(48, 96, 192), vision_keypoints=64, hidden_size=256, num_layers=11,
                         num_heads=8),
}


def preset(name: str, **overrides) -> VLAConfig:
    """The named preset, with fields replaced by ``overrides`` (e.g. ``action_dim=4``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown VLA preset '{name}'{suggest(name, PRESETS)}; presets: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
