"""The policy backend contract: ``Observation -> chunk (H, A)`` of absolute joint targets.

h (``n_action_steps``) is the executor's business (openpi's ActionChunkBroker shape), unless the
checkpoint has an efficiency head: then ``predict_chunk_and_horizon`` also returns the h it picks
for that chunk, and an executor with ``horizon: learned`` runs it. Backends say what they need from
an observation in ``PolicyMetadata`` so the node subscribes to exactly that.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from policytrim_ros import constants as C


@dataclass(frozen=True)
class Observation:
    """What the robot (or its simulator) reports after a control step: a policy's input.

    image: (H, N * W, 3) uint8 RGB: the env's N cameras tiled left to right in their configured
        order (one camera by default; zeros when not rendered).
    joint_positions: (A,) float64 joint readings, with sensor noise (rad; gripper opening in m).
    joint_velocities: (A,) float64 true joint velocities (rad/s; m/s for the gripper).
    environment_state: float64 privileged true state, for scripted experts and metrics only, never a
        learned policy's input: (10,) on the embedded arm, see ``robots.arm.ENVIRONMENT_STATE_LAYOUT``;
        Meta-World's observation and physics state on ``MetaWorldEnv``.
    instruction: the task's language instruction.
    time: simulated seconds since reset.
    step: control steps since reset.
    """

    image: np.ndarray
    joint_positions: np.ndarray
    joint_velocities: np.ndarray
    environment_state: np.ndarray
    instruction: str
    time: float
    step: int


class PolicyInputError(ValueError):
    """The observation cannot be used by this policy (e.g. an instruction it does not know)."""


class InferenceError(RuntimeError):
    """An inference call failed for a reason outside the observation (a policy server that is gone,
    timed out or answered with an error); ``end_reason`` is what the episode ends with."""

    end_reason = C.END_INFERENCE_FAILED


class InferenceTimeoutError(InferenceError):
    """An inference call did not return within its time limit."""

    end_reason = C.END_INFERENCE_TIMEOUT


@dataclass(frozen=True)
class PolicyMetadata:
    """What a backend produces and consumes.

    name: backend name (``expert``, ``torch``, ``onnx``).
    chunk_size: H, rows of every chunk.
    joint_names: (A,) the joints of each chunk column, in order.
    image_size: (height, width) of the RGB image it needs (its cameras tiled left to right), or None
        if it uses no image.
    uses_environment_state: needs privileged simulator state (only the scripted expert does).
    cameras: the cameras its images must come from, in tile order (the Image frame_ids it was
        trained on); () for one camera of any name.
    horizons: the executed lengths h its efficiency head picks from (``predict_chunk_and_horizon``),
        or () when it has none.
    """

    name: str
    chunk_size: int
    joint_names: tuple[str, ...]
    image_size: tuple[int, int] | None
    uses_environment_state: bool = False
    cameras: tuple[str, ...] = ()
    horizons: tuple[int, ...] = ()

    @property
    def action_dim(self) -> int:
        return len(self.joint_names)

    @property
    def num_cameras(self) -> int:
        """Images per observation (0 without an image): tiles of ``image_size``, one per camera."""
        return 0 if self.image_size is None else max(1, len(self.cameras))

    @property
    def camera_image_size(self) -> tuple[int, int] | None:
        """(height, width) of each camera's image, or None if it uses no image."""
        if self.image_size is None:
            return None
        return self.image_size[0], self.image_size[1] // self.num_cameras


def camera_mismatch(metadata: PolicyMetadata, index: int, frame_id: str) -> str | None:
    """Why an image of camera ``index`` whose header names ``frame_id`` is not what the policy was
    trained on, or None when it is (or when either side does not name its camera)."""
    expected = metadata.cameras[index] if index < len(metadata.cameras) else ''
    if not expected or not frame_id or frame_id == expected:
        return None
    return (f"images of camera {index + 1} come from '{frame_id}' but the {metadata.name} policy was trained "
            f"on '{expected}' there: a learned policy seldom transfers to another view")


@runtime_checkable
class ChunkPolicy(Protocol):
    """A policy backend. ``log_prob`` is added by the learned backends for RL post-training."""

    metadata: PolicyMetadata

    def reset(self) -> None:
        """Forget per-episode state (caches); called at every episode start."""

    def predict_action_chunk(self, observation: Observation) -> np.ndarray:
        """(H, A) absolute joint position targets for the next H control steps."""


@runtime_checkable
class HorizonPolicy(ChunkPolicy, Protocol):
    """A backend with an efficiency head (``metadata.horizons`` not empty)."""

    def predict_chunk_and_horizon(self, observation: Observation) -> tuple[np.ndarray, int]:
        """((H, A) targets as ``predict_action_chunk``, h): the head's most likely executed length for
        this chunk, one of ``metadata.horizons``, from the same inference call."""
