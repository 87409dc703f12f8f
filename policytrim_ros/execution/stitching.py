"""Async inference seams: how a chunk computed while the previous window ran takes over from it.

Timeline (control steps of ``dt``): a call starts from the observation taken after step ``k_obs``;
while it thinks the previous window keeps running; its chunk's row i is the target for step
``k_obs + i + 1``. The new window takes over at ``takeover``, when the previous window ends (or at
once, if it has already ended and the arm is holding), after step ``k_take``; rows
``0 .. k_take - k_obs - 1`` are stale (their steps ran, or the arm stood still for them) and are
skipped: the window runs rows ``stale .. stale + n - 1`` (RTC's "frozen prefix" d, SAIL's outdated
actions).

The message a joint_trajectory_controller gets must replace the running one without a jump on every
distro, whenever it arrives: released JTCs (Humble/Jazzy/Kilted) replace the running trajectory at
ARRIVAL (a future stamp is not a deferred start; a past stamp skips the points already due and
samples between the rest), master/Rolling and the embedded sim defer a future stamp. So the message
is stamped at the latest knot time of the running trajectory at or before the send time, and
repeats that trajectory's own remaining knots up to the takeover (the committed prefix) before the
new ones: sampled anywhere before the takeover it is the running trajectory (windows that end at
rest: but for the takeover knot's velocity, so the arm does not stop there), and a late arrival
only skips knots identical to what was running. The first new knots are blended with the
previous chunk's plan for the same steps (``blend_weights``), so the velocity at the seam follows
the old plan and hands over to the new one (RTC's soft mask, applied after the fact: our backends
have no guided denoiser to inpaint with).
"""
from __future__ import annotations

import math

import numpy as np

from policytrim_ros.trajectory import TimedTrajectory

TIME_EPS = 1e-6
"""Seconds under which two times are the same instant (clocks are sums of float steps)."""


LEAD_MARGIN_STEPS = 2
"""Control steps beyond a call's expected latency by which it starts before the window in flight
ends: one for the wait between an observation and the control step that sees it, one for jitter
(a simulator's clock advances in whole steps, so a call of 0.31 s can end 0.4 s of sim time later)."""


class StaleChunkError(RuntimeError):
    """Every action of a chunk is for a step that has already run: nothing of it can be sent."""


def blend_weights(blend_steps: int, n: int) -> np.ndarray:
    """(n,) weights of the PREVIOUS plan for the first ``n`` new knots: (B - j) / (B + 1) for j < B, then 0."""
    j = np.arange(n, dtype=np.float64)
    return np.clip((blend_steps - j) / (blend_steps + 1.0), 0.0, 1.0) if blend_steps > 0 else np.zeros(n)


def blended_rows(new_rows: np.ndarray, first_step: int, previous_chunk: np.ndarray | None,
                 previous_observation_step: int, blend_steps: int) -> np.ndarray:
    """New targets (n, A) for steps ``first_step + 1 ..`` mixed with the previous chunk's rows for the same
    steps (its row i targets step ``previous_observation_step + i + 1``) where it has them."""
    rows = np.array(new_rows, dtype=np.float64)
    if previous_chunk is None or blend_steps <= 0:
        return rows
    weights = blend_weights(blend_steps, len(rows))
    for j, w in enumerate(weights):
        i = first_step + j - previous_observation_step
        if w <= 0 or not 0 <= i < len(previous_chunk):
            continue
        rows[j] = w * previous_chunk[i] + (1.0 - w) * rows[j]
    return rows


def knot_grid_time(trajectory: TimedTrajectory, time: float, dt: float) -> float:
    """The latest time on ``trajectory``'s knot grid (its start + k dt) at or before ``time``."""
    origin = float(trajectory.start_time)
    return origin + max(0, math.floor((time - origin) / dt + TIME_EPS)) * dt


def stitched_trajectory(previous: TimedTrajectory | None, takeover: float, send_time: float,
                        rows: np.ndarray, next_row: np.ndarray | None, reference: np.ndarray, dt: float,
                        joint_names: tuple[str, ...], window_end: str) -> TimedTrajectory:
    """The message that hands over from ``previous`` (absolute ``start_time``) to ``rows`` at ``takeover``.

    rows: (n, A) the new window's targets, knot j at ``takeover + (j + 1) dt``; next_row: the chunk's
    row after them (the last knot's velocity when the window ends moving), or None; reference: (A,)
    where the arm is commanded at the takeover when no knot of ``previous`` is (it ended, or none).
    With ``previous`` still running at ``send_time`` the message starts at its latest knot time at or
    before ``send_time`` and repeats its knots up to ``takeover`` (velocities kept; with ``window_end``
    'rest' the takeover knot, where the running window was to stop, gets the central difference into
    the new rows instead, so the arm does not stop at the seam); otherwise it starts at ``takeover``.
    Knot velocities are central differences; the last one is 0 with ``window_end`` 'rest'.
    """
    rows = np.asarray(rows, dtype=np.float64)
    running = previous is not None and takeover > send_time + TIME_EPS
    if running:
        start = knot_grid_time(previous, send_time, dt)
        knot_times = previous.start_time + previous.times_from_start
        ahead = (knot_times > start + TIME_EPS) & (knot_times <= takeover + TIME_EPS)
        prefix_p, prefix_v = previous.positions[ahead], previous.velocities[ahead].copy()
        before = previous.positions[knot_times < takeover - TIME_EPS]
        at_takeover = prefix_p[-1] if len(prefix_p) else reference
        before_takeover = before[-1] if len(before) else at_takeover
    else:
        start, prefix_p, prefix_v = takeover, np.zeros((0, rows.shape[1])), np.zeros((0, rows.shape[1]))
        at_takeover = before_takeover = np.asarray(reference, dtype=np.float64)
    # central differences over [knot before the takeover, takeover knot, rows..., next_row]
    path = np.vstack([before_takeover, at_takeover, rows, rows[-1:] if next_row is None else next_row[None]])
    velocities = (path[2:] - path[:-2]) / (2.0 * dt)          # at the takeover knot and each row
    if next_row is None:
        velocities[-1] = (rows[-1] - path[-3]) / dt if len(rows) > 1 else 0.0
    if len(prefix_v) and window_end == 'rest':   # the running window was to stop there: keep moving instead
        prefix_v[-1] = velocities[0]
    new_v = velocities[1:].copy()
    if window_end == 'rest':
        new_v[-1] = 0.0
    n_prefix = len(prefix_p)
    return TimedTrajectory(
        joint_names=tuple(joint_names),
        times_from_start=dt * np.arange(1, n_prefix + len(rows) + 1, dtype=np.float64),
        positions=np.vstack([prefix_p, rows]),
        velocities=np.vstack([prefix_v, new_v]),
        start_time=start,
    )
