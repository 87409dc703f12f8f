"""An example plug-in backend: the smallest ``ChunkPolicy`` that moves an arm, to copy into your package.

Run it in policy_node (or ``policytrim eval``) with

    policy:
      backend: plugin
      plugin: policytrim_ros.policy.examples.move_to_pose:MoveToPosePolicy
      plugin_args: '{target: [0.3, 0.2, 0.1, 0.0, 0.0, 0.0, 0.02], speed: 0.2}'

policy_node builds the class with keyword arguments chunk_size (H), control_dt (s per action),
joint_names (the robot's, the chunk's columns), checkpoint (``policy.checkpoint`` as given) and
those of ``plugin_args``; it then calls ``reset()`` at each episode start and
``predict_action_chunk(observation)`` for each chunk, on its inference thread (a slow model never
blocks the node). ``metadata`` says what the policy needs: here no image (``image_size`` None), so
the node subscribes to joint states only; a VLA would give its image size and cameras. Raise
``PolicyInputError`` for an observation it cannot use (the episode ends with 'error' and the arm
holds); any other exception ends it with 'inference_failed'. Every chunk still passes the node's
safety checks before it reaches the controller.
"""
from __future__ import annotations

import time

import numpy as np

from policytrim_ros.policy.base import Observation, PolicyInputError, PolicyMetadata


class MoveToPosePolicy:
    """Chunks that move every joint toward ``target`` at up to ``speed`` per second (rad/s; m/s for a
    gripper), then hold it. ``latency_s`` sleeps in every call: a stand-in for a slow model."""

    def __init__(self, chunk_size: int, control_dt: float, joint_names: tuple[str, ...], checkpoint: str = '',
                 target: list[float] | None = None, speed: float = 0.2, latency_s: float = 0.0):
        self.target = np.zeros(len(joint_names)) if target is None else np.asarray(target, dtype=np.float64)
        if self.target.shape != (len(joint_names),) or not np.isfinite(self.target).all():
            raise ValueError(f'target {target} must be {len(joint_names)} finite positions for {list(joint_names)}')
        if not speed > 0 or not latency_s >= 0:
            raise ValueError(f'speed ({speed}) must be > 0 and latency_s ({latency_s}) >= 0')
        self.max_step = speed * control_dt * np.arange(1, chunk_size + 1)[:, None]   # (H, 1) reach per row
        self.latency_s = latency_s
        self.metadata = PolicyMetadata(name='move_to_pose', chunk_size=chunk_size, joint_names=tuple(joint_names),
                                       image_size=None)

    def reset(self) -> None:
        """Nothing to forget between episodes."""

    def predict_action_chunk(self, observation: Observation) -> np.ndarray:
        """(H, A) absolute joint targets: row k is (k + 1) control steps further toward the target."""
        time.sleep(self.latency_s)
        q = np.asarray(observation.joint_positions, dtype=np.float64)
        if q.shape != self.target.shape:
            raise PolicyInputError(f'joint_positions has shape {q.shape}; this policy needs {self.target.shape}')
        return q + np.clip(self.target - q, -self.max_step, self.max_step)
