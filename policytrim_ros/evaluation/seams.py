"""Seam jumps: how much the commanded (desired) joint state jumps where one window hands over to the next.

The windows a controller received, each with the controller-clock time it arrived, are replayed
through the embedded arm's JTC-semantics follower (``envs.follower``: the new trajectory takes over
from the commanded state, points already due are skipped, the last knot is held) and the commanded
position and velocity sampled every ``sample_dt``. Inside a window they are smooth (cubic Hermite);
a jump between two samples comes from a seam: a trajectory that takes over mid-way (stale points
skipped: the position jumps), or a window that ends moving and is held until the next arrives
(the velocity drops to zero). The largest per-sample change is reported, over all seams.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policytrim_ros.envs.follower import TrajectoryFollower
from policytrim_ros.trajectory import TimedTrajectory


@dataclass(frozen=True)
class SeamJumps:
    """Largest changes of the commanded state between two samples ``sample_dt`` apart, over all joints.

    position: rad (m for the gripper), velocity: rad/s; seams: window hand-overs replayed;
    position_at, velocity_at: the time (arrival clock) each largest change ended.
    """

    position: float
    velocity: float
    seams: int
    position_at: float = 0.0
    velocity_at: float = 0.0


def seam_jumps(windows: list[tuple[float, TimedTrajectory]], sample_dt: float = 0.002) -> SeamJumps:
    """Replay one episode's ``windows`` ((arrival time, trajectory with absolute ``start_time`` or None
    = start on arrival), in arrival order) and measure the jumps after the first window's first knot
    (its takeover from the arm at rest is no seam) until just before the last window's last knot (where
    the episode's motion ends)."""
    if len(windows) < 2:
        return SeamJumps(0.0, 0.0, 0)
    first_arrival, first = windows[0]
    follower = TrajectoryFollower(first.joint_names, time_tolerance=0.25 * sample_dt)
    follower.reset(np.asarray(first.positions[0], dtype=np.float64))
    start = first_arrival if first.start_time is None else max(first.start_time, first_arrival)
    measure_from = start + float(first.times_from_start[0])
    t, ps, vs, ts = first_arrival, [], [], []
    for arrival, traj in windows:
        if arrival > t + 0.5 * sample_dt:
            times = np.arange(t + sample_dt, arrival + 0.5 * sample_dt, sample_dt)
            p, v = follower.advance(times)
            ps.append(p), vs.append(v), ts.append(times)
            t = float(times[-1])
        follower.follow(traj, t)
    times = np.arange(t + sample_dt, t + _remaining(windows[-1], t) - 0.5 * sample_dt, sample_dt)
    p, v = follower.advance(times)
    ps.append(p), vs.append(v), ts.append(times)
    times = np.concatenate(ts)
    keep = times >= measure_from - 1e-9
    p, v, times = np.vstack(ps)[keep], np.vstack(vs)[keep], times[keep]
    if len(p) < 2:
        return SeamJumps(0.0, 0.0, len(windows) - 1)
    dp, dv = np.abs(np.diff(p, axis=0)).max(axis=1), np.abs(np.diff(v, axis=0)).max(axis=1)
    return SeamJumps(float(dp.max()), float(dv.max()), len(windows) - 1, float(times[1 + dp.argmax()]),
                     float(times[1 + dv.argmax()]))


def _remaining(window: tuple[float, TimedTrajectory], now: float) -> float:
    """Seconds from ``now`` to ``window``'s last knot."""
    arrival, traj = window
    start = arrival if traj.start_time is None else traj.start_time
    return max(0.0, start + traj.duration - now)
