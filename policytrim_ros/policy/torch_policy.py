"""The VLA checkpoint served by PyTorch: the reference backend, and the one RL post-training uses."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from policytrim_ros.policy.base import Observation, PolicyInputError, PolicyMetadata
from policytrim_ros.policy.checkpoint import load_checkpoint
from policytrim_ros.policy.vla.configuration_vla import VLAConfig
from policytrim_ros.policy.vla.instruction import InstructionEncoder, shared_encoder


def vla_metadata(name: str, config: VLAConfig) -> PolicyMetadata:
    """What a VLA backend produces (H x A joint targets) and consumes (an RGB image of the config size,
    its cameras tiled left to right)."""
    return PolicyMetadata(name=name, chunk_size=config.chunk_size, joint_names=tuple(config.joint_names),
                          image_size=config.image_size, uses_environment_state=False, cameras=config.cameras,
                          horizons=config.horizons)


def vla_inputs(observation: Observation, config: VLAConfig,
               encoder: InstructionEncoder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch-of-one model inputs from an observation, checked against the config.

    Returns image (1, h, w, 3) uint8, text embedding (1, 384) float32 and state (1, A) float32.
    Raises PolicyInputError naming what is wrong (image size or dtype, joint count, NaN, instruction).
    """
    image = np.asarray(observation.image)
    expected = (config.image_height, config.image_width, 3)
    if image.shape != expected or image.dtype != np.uint8:
        n = max(1, len(config.cameras))
        tiles = f' ({n} cameras {list(config.cameras)} of {config.image_width // n}x{config.image_height}, tiled)'
        raise PolicyInputError(f'image is {image.shape} {image.dtype}; this policy needs {expected} uint8 RGB'
                               + (tiles if n > 1 else f' (set the camera resolution to '
                                  f'{config.image_width}x{config.image_height})'))
    state = np.asarray(observation.joint_positions, dtype=np.float32)
    if state.shape != (config.state_dim,):
        raise PolicyInputError(f'joint_positions has shape {state.shape}; this policy needs ({config.state_dim},) '
                               f'for joints {list(config.joint_names)}')
    if not np.isfinite(state).all():
        raise PolicyInputError(f'joint_positions {state.tolist()} contain NaN or inf')
    if not isinstance(observation.instruction, str) or not observation.instruction.strip():
        raise PolicyInputError(f'the instruction must be a non-empty string, got {observation.instruction!r}')
    text = encoder.encode(observation.instruction)
    return image[None].copy(), text[None].copy(), state[None]   # copies: the cached embedding is read-only


class TorchVLAPolicy:
    """``ChunkPolicy`` over a VLA checkpoint directory, run with PyTorch under ``inference_mode``.

    checkpoint_dir: a directory written by ``save_checkpoint``. device: torch device ('cpu', 'cuda').
    """

    def __init__(self, checkpoint_dir: str | Path, device: str = 'cpu'):
        self.model, self.config, self.checkpoint_metadata = load_checkpoint(checkpoint_dir, device=device)
        self.device = torch.device(device)
        self.metadata = vla_metadata('torch', self.config)
        self.encoder = shared_encoder()

    def reset(self) -> None:
        """Nothing per episode: instruction embeddings are cached per string across episodes."""

    def predict_action_chunk(self, observation: Observation) -> np.ndarray:
        """(H, A) float64 mean chunk of absolute joint targets (rad; gripper in m)."""
        image, text, state = vla_inputs(observation, self.config, self.encoder)
        with torch.inference_mode():
            chunk = self.model(torch.from_numpy(image).to(self.device), torch.from_numpy(text).to(self.device),
                               torch.from_numpy(state).to(self.device))
        return chunk[0].cpu().numpy().astype(np.float64)

    def predict_chunk_and_horizon(self, observation: Observation) -> tuple[np.ndarray, int]:
        """((H, A) float64 mean chunk, h): the efficiency head's most likely executed length."""
        inputs = (torch.from_numpy(x).to(self.device) for x in vla_inputs(observation, self.config, self.encoder))
        with torch.inference_mode():
            chunk, logits = self.model.chunk_and_horizon_logits(*inputs)
        return chunk[0].cpu().numpy().astype(np.float64), self.config.horizons[int(logits[0].argmax())]

    def log_prob(self, image: torch.Tensor, text_embedding: torch.Tensor, state: torch.Tensor,
                 actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) Gaussian log-density of chunks ``actions`` (B, H, A) summed over ``mask`` (B, H) bool;
        differentiable (see ``VLAModel.log_prob``)."""
        return self.model.log_prob(image, text_embedding, state, actions, mask)
