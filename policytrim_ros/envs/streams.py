"""Seeded random streams shared by every simulated environment.

Episode streams (layout, physics randomization, actuation noise, perturbations) are drawn
sequentially from the episode seed. Sensor noise is a pure function of (seed, control step), so
observing more or less often never changes a rollout: the ROS path (sim_node observes every step)
and the ROS-free loop (observes only when it re-plans) stay bit-identical.
"""
from __future__ import annotations

import numpy as np

EPISODE_STREAMS = ('layout', 'physics', 'actuation', 'perturbation')
SENSOR_STREAMS = ('proprioception', 'image')


def episode_rngs(seed: int) -> dict[str, np.random.Generator]:
    """One independent generator per name in EPISODE_STREAMS, spawned from ``seed``."""
    streams = np.random.SeedSequence(seed).spawn(len(EPISODE_STREAMS))
    return {name: np.random.default_rng(s) for name, s in zip(EPISODE_STREAMS, streams)}


def sensor_rng(seed: int, stream: str, step: int, sensor: int = 0) -> np.random.Generator:
    """The generator of sensor ``stream`` (one of SENSOR_STREAMS) at control ``step`` of the episode;
    ``sensor`` tells several sensors of one stream apart (camera i of an env renders with i)."""
    key = (len(EPISODE_STREAMS) + SENSOR_STREAMS.index(stream), step) + ((sensor,) if sensor else ())
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
