"""The policy backend contract: ``observation -> chunk (H, A)`` of absolute joint targets.

h (``n_action_steps``) is not the policy's business: the executor decides how much of the chunk runs
(openpi's ActionChunkBroker shape). Backends say what they need from an observation in
``PolicyMetadata`` so the node subscribes to exactly that.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from policytrim_ros.envs.base import Observation


class PolicyInputError(ValueError):
    """The observation cannot be used by this policy (e.g. an instruction it does not know)."""


@dataclass(frozen=True)
class PolicyMetadata:
    """What a backend produces and consumes.

    name: backend name (``expert``, ``torch``, ``onnx``).
    chunk_size: H, rows of every chunk.
    joint_names: (A,) the joints of each chunk column, in order.
    image_size: (height, width) of the RGB image it needs, or None if it uses no image.
    uses_environment_state: needs privileged simulator state (only the scripted expert does).
    camera: the camera its images must come from (the Image frame_id it was trained on), '' if any.
    """

    name: str
    chunk_size: int
    joint_names: tuple[str, ...]
    image_size: tuple[int, int] | None
    uses_environment_state: bool = False
    camera: str = ''

    @property
    def action_dim(self) -> int:
        return len(self.joint_names)


def camera_mismatch(metadata: PolicyMetadata, frame_id: str) -> str | None:
    """Why an image whose header names camera ``frame_id`` is not what the policy was trained on,
    or None when it is (or when either side does not name its camera)."""
    if not metadata.camera or not frame_id or frame_id == metadata.camera:
        return None
    return (f"images come from camera '{frame_id}' but the {metadata.name} policy was trained on "
            f"'{metadata.camera}': a learned policy seldom transfers to another view")


@runtime_checkable
class ChunkPolicy(Protocol):
    """A policy backend. ``log_prob`` is added by the learned backends for RL post-training."""

    metadata: PolicyMetadata

    def reset(self) -> None:
        """Forget per-episode state (caches); called at every episode start."""

    def predict_action_chunk(self, observation: Observation) -> np.ndarray:
        """(H, A) absolute joint position targets for the next H control steps."""
