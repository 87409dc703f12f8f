"""``VLAConfig``: sizes of the compact Vision-Language-Action model, plus named presets."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from policytrim_ros.config import ConfigError, from_dict, suggest, to_dict
from policytrim_ros.envs.base import JOINT_NAMES


@dataclass(frozen=True)
class VLAConfig:
    """Shape of a ``VLAModel``: image -> patch tokens, instruction -> token, state -> token, H queries.

    image_height: rows of the RGB input image (pixels); a multiple of patch_size.
    image_width: columns of the RGB input image (pixels); equal to image_height (SigLIP's position
        embedding is for square images).
    patch_size: side of the square image patches (pixels); (image_height / patch_size)^2 patch tokens.
    vision_hidden_size: width of the SigLIP vision tower (features per token).
    vision_layers: transformer layers of the SigLIP vision tower.
    vision_heads: attention heads of the vision tower; divides vision_hidden_size.
    text_embedding_dim: size of the instruction embedding computed outside the model (384 for MiniLM).
    state_dim: proprioceptive state size (joint positions, rad or m); equals action_dim because the
        chunk is predicted as offsets from the current state.
    action_dim: A, actions per step (joint position targets, rad or m).
    chunk_size: H, steps per predicted chunk (one learned query per step).
    hidden_size: width of the action transformer (features per token).
    num_layers: pre-norm transformer encoder layers of the action transformer.
    num_heads: attention heads of the action transformer; divides hidden_size.
    log_std_init: initial log standard deviation of the Gaussian policy, in normalized delta units.
    log_std_min: lower clamp of that log standard deviation (normalized delta units).
    log_std_max: upper clamp of that log standard deviation (normalized delta units).
    joint_names: (A,) the name of each action dimension, in order.
    """

    image_height: int = 96
    image_width: int = 96
    patch_size: int = 16
    vision_hidden_size: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_embedding_dim: int = 384
    state_dim: int = 7
    action_dim: int = 7
    chunk_size: int = 16
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    log_std_init: float = -1.0
    log_std_min: float = -5.0
    log_std_max: float = 1.0
    joint_names: tuple[str, ...] = JOINT_NAMES

    def __post_init__(self):
        positive = ('image_height', 'image_width', 'patch_size', 'vision_hidden_size', 'vision_layers',
                    'vision_heads', 'text_embedding_dim', 'state_dim', 'action_dim', 'chunk_size',
                    'hidden_size', 'num_layers', 'num_heads')
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} ({value!r}) must be an integer >= 1')
        if self.image_width != self.image_height:
            raise ValueError(f'image_width ({self.image_width}) must equal image_height ({self.image_height}): '
                             'the SigLIP vision tower takes square images')
        if self.image_height % self.patch_size:
            raise ValueError(f'image_height ({self.image_height}) must be a multiple of patch_size '
                             f'({self.patch_size})')
        for width, heads in (('vision_hidden_size', 'vision_heads'), ('hidden_size', 'num_heads')):
            if getattr(self, width) % getattr(self, heads):
                raise ValueError(f'{width} ({getattr(self, width)}) must be divisible by {heads} '
                                 f'({getattr(self, heads)})')
        if self.state_dim != self.action_dim:
            raise ValueError(f'state_dim ({self.state_dim}) must equal action_dim ({self.action_dim}): '
                             'actions are predicted as offsets from the state')
        if len(self.joint_names) != self.action_dim:
            raise ValueError(f'joint_names has {len(self.joint_names)} names {list(self.joint_names)} but '
                             f'action_dim is {self.action_dim}')
        if len(set(self.joint_names)) != len(self.joint_names):
            raise ValueError(f'joint_names {list(self.joint_names)} must be unique')
        for name in ('log_std_init', 'log_std_min', 'log_std_max'):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f'{name} ({getattr(self, name)}) must be finite')
        if not self.log_std_min <= self.log_std_init <= self.log_std_max:
            raise ValueError(f'log_std_init ({self.log_std_init}) must be in [log_std_min ({self.log_std_min}), '
                             f'log_std_max ({self.log_std_max})]')

    @property
    def num_patches(self) -> int:
        """Patch tokens per image."""
        return (self.image_height // self.patch_size) ** 2

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
    # ~1.8 M parameters: about 1.6 ms per chunk in onnxruntime on 2 CPU threads (notes section 4).
    'vla-2m': VLAConfig(),
    # ~9.8 M parameters: about 7 ms per chunk in onnxruntime on 2 CPU threads.
    'vla-10m': VLAConfig(vision_hidden_size=256, vision_layers=6, vision_heads=8,
                         hidden_size=256, num_layers=6, num_heads=8),
}


def preset(name: str, **overrides) -> VLAConfig:
    """The named preset, with fields replaced by ``overrides`` (e.g. ``action_dim=4``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown VLA preset '{name}'{suggest(name, PRESETS)}; presets: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
