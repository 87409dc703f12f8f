"""Replay a fixed sequence of chunks from a .npy file: exercise the controller path on a real arm
(or in a test) before any model runs. Loading never unpickles (``allow_pickle=False``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from policytrim_ros.policy.base import Observation, PolicyMetadata


class ReplayPolicy:
    """Returns chunk i of an (N, H, A) array on the i-th call of an episode (the last one repeats)."""

    def __init__(self, path: str | Path, chunk_size: int, joint_names: tuple[str, ...]):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f'replay file not found: {path}')
        chunks = np.load(path, allow_pickle=False)
        if chunks.ndim != 3 or chunks.shape[1] != chunk_size or chunks.shape[2] != len(joint_names):
            raise ValueError(f'{path} holds shape {chunks.shape}; expected (N, {chunk_size}, '
                             f'{len(joint_names)}) for chunk_size {chunk_size} and joints {list(joint_names)}')
        self.chunks = chunks.astype(np.float64)
        self.metadata = PolicyMetadata(name='replay', chunk_size=chunk_size, joint_names=tuple(joint_names),
                                       image_size=None)
        self._call = 0

    def reset(self) -> None:
        self._call = 0

    def predict_action_chunk(self, observation: Observation) -> np.ndarray:
        chunk = self.chunks[min(self._call, len(self.chunks) - 1)]
        self._call += 1
        return chunk.copy()
