"""Whole-chunk safety checks: a chunk is rejected before any of it moves the robot."""
from __future__ import annotations

import numpy as np

from policytrim_ros.execution.config import SafetyConfig


class UnsafeChunkError(ValueError):
    """The chunk must not be sent; the message says which joint and step broke which rule."""


def check_chunk(chunk: np.ndarray, current_position: np.ndarray | None, joint_names: tuple[str, ...],
                dt: float, config: SafetyConfig) -> np.ndarray:
    """Validate a chunk (H, A) of absolute joint targets; return it as float64.

    Rejects: wrong shape, NaN/inf, targets more than position_margin outside [position_lower,
    position_upper] (those within the margin are clipped onto the limit), and steps faster than
    max_velocity (the first step is measured from ``current_position``).
    """
    chunk = np.asarray(chunk, dtype=np.float64)
    a = len(joint_names)
    if chunk.ndim != 2 or chunk.shape[1] != a or len(chunk) == 0:
        raise UnsafeChunkError(f'chunk must have shape (H, {a}), got {chunk.shape}')
    if not np.isfinite(chunk).all():
        step, col = np.argwhere(~np.isfinite(chunk))[0]
        raise UnsafeChunkError(f'chunk has NaN/inf at step {step}, joint {joint_names[col]}')
    for limits, name in ((config.position_lower, 'position_lower'), (config.position_upper, 'position_upper'),
                         (config.max_velocity, 'max_velocity'), (config.position_margin, 'position_margin')):
        if limits and len(limits) != a:
            raise UnsafeChunkError(f'safety.{name} has {len(limits)} values for {a} joints')
    if config.position_lower:
        lo, hi = np.asarray(config.position_lower), np.asarray(config.position_upper)
        margin = np.asarray(config.position_margin) if config.position_margin else np.zeros(a)
        bad = (chunk < lo - margin) | (chunk > hi + margin)
        if bad.any():
            step, col = np.argwhere(bad)[0]
            raise UnsafeChunkError(
                f'target {chunk[step, col]:.4f} for joint {joint_names[col]} at step {step} is outside '
                f'[{lo[col]:.4f}, {hi[col]:.4f}] by more than its margin {margin[col]:.4f}')
        chunk = np.clip(chunk, lo, hi)
    if config.max_velocity:
        vmax = np.asarray(config.max_velocity)
        start = chunk[:1] if current_position is None else np.asarray(current_position, dtype=np.float64)[None]
        speed = np.abs(np.diff(np.concatenate([start, chunk]), axis=0)) / dt
        bad = speed > vmax
        if bad.any():
            step, col = np.argwhere(bad)[0]
            raise UnsafeChunkError(
                f'joint {joint_names[col]} would move at {speed[step, col]:.3f}/s at step {step} '
                f'(limit {vmax[col]:.3f}/s)')
    return chunk
