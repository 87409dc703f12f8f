"""A plug-in backend that makes any backend slow: for trying and benchmarking async inference.

    policy:
      backend: plugin
      plugin: policytrim_ros.policy.examples.delayed:DelayedPolicy
      plugin_args: '{backend: expert, latency_s: 0.3}'   # or {backend: torch, checkpoint: ...}

Each call takes ``latency_s`` in all (the wrapped call's own time included, never less than it): a
stand-in for a big VLA on a GPU server, with the wrapped policy's chunks.
"""
from __future__ import annotations

import time

from policytrim_ros.policy.base import Observation
from policytrim_ros.policy.factory import PolicyConfig, make_policy


class DelayedPolicy:
    """``backend`` (with ``checkpoint``, ``num_threads``) answering each call after ``latency_s`` seconds."""

    def __init__(self, chunk_size: int, control_dt: float, joint_names: tuple[str, ...], checkpoint: str = '',
                 backend: str = 'expert', latency_s: float = 0.0, num_threads: int = 1):
        if backend == 'plugin' or not latency_s >= 0:
            raise ValueError(f'backend ({backend}) must not be plugin, and latency_s ({latency_s}) must be >= 0')
        self.inner = make_policy(PolicyConfig(backend=backend, checkpoint=checkpoint, num_threads=num_threads),
                                 chunk_size, control_dt, tuple(joint_names))
        self.latency_s = float(latency_s)
        self.metadata = self.inner.metadata

    def reset(self) -> None:
        self.inner.reset()

    def predict_action_chunk(self, observation: Observation):
        """The wrapped backend's chunk (H, A), returned ``latency_s`` after the call began."""
        started = time.perf_counter()
        chunk = self.inner.predict_action_chunk(observation)
        time.sleep(max(0.0, self.latency_s - (time.perf_counter() - started)))
        return chunk

    def __getattr__(self, name):   # log_prob, model, ... of the wrapped policy
        if name == 'inner':
            raise AttributeError(name)
        return getattr(self.inner, name)
