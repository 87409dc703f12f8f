"""``VLAModel``: a compact Vision-Language-Action model that predicts a chunk of H joint targets.

Tokens: SigLIP patch tokens of the image, one token for the instruction embedding (computed outside
the model, see ``instruction.py``), one for the proprioceptive state and H learned action queries. A
pre-norm transformer encoder mixes them and a linear head reads the H query outputs.

The head predicts *normalized offsets from the current state*; the normalization statistics are
buffers of the model, so ``forward`` maps raw inputs to raw absolute targets and an exported ONNX
graph is self-contained. The policy is Gaussian with a learned, state-independent standard deviation
per action dimension in normalized delta space; ``log_prob`` is the density of that space.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from policytrim_ros.policy.vla.configuration_vla import VLAConfig


def normalization_stats(states: np.ndarray, actions: np.ndarray, mask: np.ndarray | None = None,
                        min_std: float = 1e-4) -> tuple[np.ndarray, ...]:
    """Per-dimension statistics for ``VLAModel.set_normalization`` from a dataset.

    states: (N, A) joint positions at the inference steps (rad or m).
    actions: (N, H, A) the chunks of absolute targets that follow each state.
    mask: (N, H) bool, True where the chunk step is real data (False for padding past an episode end).
    min_std: floor of every standard deviation, so a dimension that never moves (e.g. a gripper kept
        open in a reach task) does not divide by zero.
    Returns (state_mean, state_std, delta_mean, delta_std), each (A,) float32; delta = action - state.
    """
    states = np.asarray(states, dtype=np.float64)
    actions = np.asarray(actions, dtype=np.float64)
    if states.ndim != 2 or actions.ndim != 3 or actions.shape[0] != states.shape[0] \
            or actions.shape[2] != states.shape[1]:
        raise ValueError(f'states (N, A) and actions (N, H, A) do not match: {states.shape} and {actions.shape}')
    deltas = actions - states[:, None, :]
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != actions.shape[:2]:
            raise ValueError(f'mask has shape {mask.shape}; expected (N, H) = {actions.shape[:2]}')
        deltas = deltas[mask]
    deltas = deltas.reshape(-1, states.shape[1])
    if len(states) == 0 or len(deltas) == 0:
        raise ValueError('normalization statistics need at least one state and one unmasked action')
    return tuple(x.astype(np.float32) for x in (states.mean(0), np.maximum(states.std(0), min_std),
                                                deltas.mean(0), np.maximum(deltas.std(0), min_std)))


class VLAModel(nn.Module):
    """``(image, instruction embedding, state) -> (B, H, A)`` mean chunk of absolute joint targets."""

    def __init__(self, config: VLAConfig):
        super().__init__()
        self.config = c = config
        self.vision = SiglipVisionModel(SiglipVisionConfig(
            hidden_size=c.vision_hidden_size, intermediate_size=4 * c.vision_hidden_size,
            num_hidden_layers=c.vision_layers, num_attention_heads=c.vision_heads,
            image_size=c.image_height, patch_size=c.patch_size, vision_use_head=False))
        self.vision_projection = nn.Linear(c.vision_hidden_size, c.hidden_size)
        self.text_projection = nn.Linear(c.text_embedding_dim, c.hidden_size)
        self.state_projection = nn.Linear(c.state_dim, c.hidden_size)
        self.action_queries = nn.Parameter(torch.randn(c.chunk_size, c.hidden_size) * 0.02)
        layer = nn.TransformerEncoderLayer(c.hidden_size, c.num_heads, dim_feedforward=4 * c.hidden_size,
                                           dropout=0.0, activation='gelu', batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, c.num_layers, norm=nn.LayerNorm(c.hidden_size),
                                                 enable_nested_tensor=False)
        self.action_head = nn.Linear(c.hidden_size, c.action_dim)
        self.log_std_param = nn.Parameter(torch.full((c.action_dim,), float(c.log_std_init)))
        # Normalization statistics (raw units): identity until set_normalization is called.
        self.register_buffer('state_mean', torch.zeros(c.state_dim))
        self.register_buffer('state_std', torch.ones(c.state_dim))
        self.register_buffer('delta_mean', torch.zeros(c.action_dim))
        self.register_buffer('delta_std', torch.ones(c.action_dim))

    def set_normalization(self, state_mean, state_std, delta_mean, delta_std) -> None:
        """Store dataset statistics, each (A,): state mean/std and mean/std of ``action - state``.

        Call once before training (see ``normalization_stats``); they are saved with the weights.
        """
        for name, value in (('state_mean', state_mean), ('state_std', state_std),
                            ('delta_mean', delta_mean), ('delta_std', delta_std)):
            buffer = getattr(self, name)
            value = torch.as_tensor(np.asarray(value), dtype=buffer.dtype)
            if value.shape != buffer.shape:
                raise ValueError(f'{name} has shape {tuple(value.shape)}; expected {tuple(buffer.shape)}')
            bad = ~torch.isfinite(value) | ((value <= 0) if name.endswith('std') else False)
            if bad.any():
                i = int(bad.nonzero()[0])
                rule = 'finite and > 0' if name.endswith('std') else 'finite'
                raise ValueError(f'{name}[{i}] ({float(value[i]):.6g}) must be {rule} '
                                 f'(dimension {self.config.joint_names[i]})')
            buffer.copy_(value)

    def num_parameters(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def normalized_delta(self, image: torch.Tensor, text_embedding: torch.Tensor,
                         state: torch.Tensor) -> torch.Tensor:
        """The head output: (B, H, A) normalized offsets ``(action - state - delta_mean) / delta_std``.

        image: (B, h, w, 3) uint8 RGB. text_embedding: (B, 384) float instruction embedding.
        state: (B, A) float joint positions (rad or m).
        """
        pixels = image.permute(0, 3, 1, 2).to(torch.float32) * (2.0 / 255.0) - 1.0   # SigLIP: [-1, 1]
        patches = self.vision_projection(self.vision(pixel_values=pixels).last_hidden_state)
        text = self.text_projection(text_embedding.to(torch.float32)).unsqueeze(1)
        proprio = self.state_projection((state.to(torch.float32) - self.state_mean) / self.state_std).unsqueeze(1)
        queries = self.action_queries.unsqueeze(0).expand(patches.shape[0], -1, -1)
        tokens = self.transformer(torch.cat([patches, text, proprio, queries], dim=1))
        return self.action_head(tokens[:, -self.config.chunk_size:])

    def forward(self, image: torch.Tensor, text_embedding: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """(B, H, A) float32 mean chunk of absolute joint targets in raw units (rad or m).

        image: (B, h, w, 3) uint8 RGB. text_embedding: (B, 384) float. state: (B, A) float (rad or m).
        """
        delta = self.normalized_delta(image, text_embedding, state) * self.delta_std + self.delta_mean
        return state.to(torch.float32).unsqueeze(1) + delta

    def normalized_error(self, mean: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(B, H, A) ``(mean - actions) / delta_std``: the prediction error in normalized delta units.

        mean: (B, H, A) output of ``forward``; actions: (B, H, A) target absolute joint positions.
        Equal to ``normalized_delta`` minus the normalized target, so BC can take its mean square.
        """
        return (mean - actions.to(mean.dtype)) / self.delta_std

    def log_std(self) -> torch.Tensor:
        """(A,) clamped log standard deviation in normalized delta units."""
        return self.log_std_param.clamp(self.config.log_std_min, self.config.log_std_max)

    def gaussian_log_prob(self, mean: torch.Tensor, actions: torch.Tensor,
                          mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) log-density of ``actions`` (B, H, A) under N(mean, std) in normalized delta space.

        mean: (B, H, A) output of ``forward``. mask: (B, H) bool, the steps to count (None = all).
        The log-density is summed over the masked steps and all A dimensions.
        """
        log_std = self.log_std()
        z = self.normalized_error(mean, actions) / log_std.exp()
        per_step = (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        if mask is not None:
            per_step = per_step * mask.to(per_step.dtype)
        return per_step.sum(-1)

    def log_prob(self, image: torch.Tensor, text_embedding: torch.Tensor, state: torch.Tensor,
                 actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) Gaussian log-density of the chunks ``actions`` (B, H, A), summed over ``mask`` (B, H)."""
        return self.gaussian_log_prob(self(image, text_embedding, state), actions, mask)

    def sample(self, mean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, H, A) chunk drawn from N(mean, std) (raw units; std = exp(log_std) * delta_std)."""
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + noise * self.log_std().exp() * self.delta_std
