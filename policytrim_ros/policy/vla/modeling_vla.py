"""``VLAModel``: a compact Vision-Language-Action model that predicts a chunk of H joint targets.

Tokens: the image's pooled feature map from a convolutional encoder trained from scratch, one token
of spatial-softmax keypoints (where things are, in image coordinates), one token for the
instruction embedding (computed outside the model, see ``instruction.py``), one for the
proprioceptive state and H learned action queries. A pre-norm transformer encoder mixes them and a
linear head reads the H query outputs.

Why convolutions and not a ViT: with no pretrained vision weights offline, a SigLIP tower trained
from scratch on a few hundred demonstrations did not learn where a 5-pixel cube is in 3000 CPU
steps (reach SR 0.0); a convolutional stem with spatial softmax (robomimic, Diffusion Policy) is
built to localize, and learns it in far fewer steps.

The head predicts *normalized offsets from the current state* (or, with ``action_offsets`` off,
normalized actions); the normalization statistics are buffers of the model, so ``forward`` maps
raw inputs to raw actions and an exported ONNX graph is self-contained. The policy is Gaussian
with a learned, state-independent standard deviation per action dimension in normalized delta
space; ``log_prob`` is the density of that space.

A model whose config names ``horizons`` also has the efficiency head (``HorizonHead``): per call,
logits over those executed lengths h, read off the same forward pass (``plan``).
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from policytrim_ros.policy.vla.configuration_vla import VLAConfig


class _Stage(nn.Module):
    """A stride-2 3x3 convolution, then a residual 3x3 convolution; GroupNorm and GELU after each."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        groups = math.gcd(8, out_channels)
        self.down = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1),
                                  nn.GroupNorm(groups, out_channels), nn.GELU())
        self.residual = nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1),
                                      nn.GroupNorm(groups, out_channels), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return x + self.residual(x)


class SpatialSoftmax(nn.Module):
    """(B, C, h, w) features -> (B, 2K) expected (x, y) in [-1, 1] of K learned keypoint maps."""

    def __init__(self, channels: int, keypoints: int, height: int, width: int):
        super().__init__()
        self.keypoint_maps = nn.Conv2d(channels, keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing='ij')
        self.register_buffer('grid', torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.keypoint_maps(features).flatten(2) / self.log_temperature.exp()   # (B, K, h*w)
        return (logits.softmax(-1) @ self.grid).flatten(1)                              # (B, 2K)


class VisionEncoder(nn.Module):
    """(B, h, w, 3) uint8 RGB -> (B, 1 + num_patches, hidden): a keypoint token, then patch tokens."""

    def __init__(self, config: VLAConfig):
        super().__init__()
        channels = (3, *config.vision_channels)
        self.stages = nn.Sequential(*(_Stage(a, b) for a, b in zip(channels[:-1], channels[1:])))
        rows, columns = config.feature_size
        self.keypoints = SpatialSoftmax(channels[-1], config.vision_keypoints, rows, columns)
        self.keypoint_projection = nn.Linear(2 * config.vision_keypoints, config.hidden_size)
        self.pool = nn.AvgPool2d(config.vision_token_pool)
        self.patch_projection = nn.Linear(channels[-1], config.hidden_size)
        self.patch_position = nn.Parameter(torch.randn(config.num_patches, config.hidden_size) * 0.02)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pixels = image.permute(0, 3, 1, 2).to(torch.float32) * (2.0 / 255.0) - 1.0   # [-1, 1]
        features = self.stages(pixels)
        keypoints = self.keypoint_projection(self.keypoints(features)).unsqueeze(1)
        patches = self.patch_projection(self.pool(features).flatten(2).transpose(1, 2)) + self.patch_position
        return torch.cat([keypoints, patches], dim=1)


class HorizonHead(nn.Module):
    """The efficiency head: ``(B, F)`` plan features -> ``(B, K)`` logits over ``config.horizons``.

    The features (``VLAModel.plan``) are the action queries' mean output token, the predicted chunk
    in normalized delta units (H x A) and the normalized state: what the VLA attends to, what it
    is about to do, and where the arm is. A LayerNorm first (the three parts have different
    scales), two GELU layers, and a last layer initialised to zero, so a new head picks every h
    with equal probability.
    """

    def __init__(self, config: VLAConfig):
        super().__init__()
        c = config
        width = c.horizon_hidden_size
        self.net = nn.Sequential(nn.LayerNorm(self.input_size(c)), nn.Linear(self.input_size(c), width), nn.GELU(),
                                 nn.Linear(width, width), nn.GELU(), nn.Linear(width, len(c.horizons)))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    @staticmethod
    def input_size(config: VLAConfig) -> int:
        """F: hidden_size + chunk_size x action_dim + state_dim."""
        return config.hidden_size + config.chunk_size * config.action_dim + config.state_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class VLAModel(nn.Module):
    """``(image, instruction embedding, state) -> (B, H, A)`` mean chunk of absolute joint targets."""

    def __init__(self, config: VLAConfig):
        super().__init__()
        self.config = c = config
        self.vision = VisionEncoder(c)
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
        # Output bounds live in the config (not the weights): constants of an exported graph.
        self.register_buffer('action_low', torch.tensor(c.action_low or (-math.inf,) * c.action_dim),
                             persistent=False)
        self.register_buffer('action_high', torch.tensor(c.action_high or (math.inf,) * c.action_dim),
                             persistent=False)
        self.horizon_head = HorizonHead(c) if c.horizons else None

    def set_normalization(self, state_mean, state_std, delta_mean, delta_std) -> None:
        """Store dataset statistics, each (A,): state mean/std and mean/std of ``action - state``
        (of ``action`` when the config's action_offsets is off).

        Call once before training (``ChunkDataset.statistics``); they are saved with the weights.
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

    def extended(self, chunk_size: int, generator: torch.Generator | None = None) -> 'VLAModel':
        """A copy predicting ``chunk_size`` >= H steps: the trained queries kept, each new step's
        query a copy of the last trained one plus noise of 0.1 x the queries' std (so the new steps start out
        predicting what step H predicts, held, and can diverge once trained); every other weight and
        the normalization copied. The new steps need training (BC on chunks of the new length)
        before their actions mean anything beyond "hold step H's target". An efficiency head is not
        kept (its input is the H-step chunk).
        """
        old = self.config.chunk_size
        if chunk_size < old:
            raise ValueError(f'chunk_size ({chunk_size}) must be >= the model\'s H ({old})')
        model = VLAModel(replace(self.config, chunk_size=chunk_size, horizons=()))   # a head reads H: dropped
        state = {k: v for k, v in self.state_dict().items()
                 if k != 'action_queries' and not k.startswith('horizon_head.')}
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert missing == ['action_queries'] and not unexpected, (missing, unexpected)
        with torch.no_grad():
            queries = self.action_queries.detach()
            noise = torch.randn(chunk_size - old, queries.shape[1], generator=generator) * 0.1 * queries.std()
            model.action_queries.copy_(torch.cat([queries, queries[-1:] + noise]))
        return model

    def with_horizon_head(self, horizons: tuple[int, ...], hidden_size: int = 64) -> 'VLAModel':
        """A copy with a new efficiency head over ``horizons`` (every other weight and buffer copied;
        an existing head is replaced). The new head picks every h with equal probability."""
        model = VLAModel(replace(self.config, horizons=tuple(horizons), horizon_hidden_size=hidden_size))
        state = {k: v for k, v in self.state_dict().items() if not k.startswith('horizon_head.')}
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert all(k.startswith('horizon_head.') for k in missing) and not unexpected, (missing, unexpected)
        return model

    def num_parameters(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def normalized_delta(self, image: torch.Tensor, text_embedding: torch.Tensor,
                         state: torch.Tensor) -> torch.Tensor:
        """The head output: (B, H, A) normalized offsets ``(action - state - delta_mean) / delta_std``.

        image: (B, h, w, 3) uint8 RGB. text_embedding: (B, 384) float instruction embedding.
        state: (B, A) float joint positions (rad or m).
        """
        return self._query_outputs(image, text_embedding, state)[1]

    def _query_outputs(self, image, text_embedding, state) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, hidden) output tokens of the action queries and (B, H, A) their normalized offsets."""
        patches = self.vision(image)
        text = self.text_projection(text_embedding.to(torch.float32)).unsqueeze(1)
        proprio = self.state_projection(self._normalized_state(state)).unsqueeze(1)
        queries = self.action_queries.unsqueeze(0).expand(patches.shape[0], -1, -1)
        tokens = self.transformer(torch.cat([patches, text, proprio, queries], dim=1))[:, -self.config.chunk_size:]
        return tokens, self.action_head(tokens)

    def _normalized_state(self, state: torch.Tensor) -> torch.Tensor:
        return (state.to(torch.float32) - self.state_mean) / self.state_std

    def _targets(self, normalized_delta: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        delta = normalized_delta * self.delta_std + self.delta_mean
        mean = state.to(torch.float32).unsqueeze(1) + delta if self.config.action_offsets else delta
        if self.config.action_low:
            mean = torch.minimum(torch.maximum(mean, self.action_low), self.action_high)
        return mean

    def forward(self, image: torch.Tensor, text_embedding: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """(B, H, A) float32 mean chunk of absolute joint targets in raw units (rad or m).

        image: (B, h, w, 3) uint8 RGB. text_embedding: (B, 384) float. state: (B, A) float (rad or m).
        The targets are clamped to [action_low, action_high] of the config when it sets them.
        """
        return self._targets(self.normalized_delta(image, text_embedding, state), state)

    def plan(self, image: torch.Tensor, text_embedding: torch.Tensor,
             state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass for the chunk and the efficiency head's input: ((B, H, A) mean chunk as ``forward``,
        (B, F) features, ``HorizonHead.input_size``), the features detached: the head trains on a frozen VLA."""
        tokens, normalized = self._query_outputs(image, text_embedding, state)
        features = torch.cat([tokens.mean(1), normalized.flatten(1), self._normalized_state(state)], dim=1)
        return self._targets(normalized, state), features.detach()

    def horizon_logits(self, features: torch.Tensor) -> torch.Tensor:
        """(B, K) logits over ``config.horizons`` from (B, F) ``plan`` features."""
        if self.horizon_head is None:
            raise ValueError('this model has no efficiency head (its config names no horizons)')
        return self.horizon_head(features)

    def chunk_and_horizon_logits(self, image: torch.Tensor, text_embedding: torch.Tensor,
                                 state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, H, A) mean chunk, (B, K) horizon logits): the exported graph of a model with the head."""
        mean, features = self.plan(image, text_embedding, state)
        return mean, self.horizon_logits(features)

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
