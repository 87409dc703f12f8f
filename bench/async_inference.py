"""Wall-clock per episode through the ROS nodes at a simulated model latency, sync vs async inference.

sim_node steps in real time (``sim.step_mode realtime``, ``real_time_factor 1``: the world does not
wait while the policy thinks, as on a robot); policy_node runs a slow policy (the plug-in
``policy.examples.delayed:DelayedPolicy`` wrapping the scripted expert, or a checkpoint, so each call
takes the given latency) with ``execution.async_inference`` false or true; episode_runner runs the
episodes. For each (latency, mode) cell: SR, steps, inference calls, wall-clock per episode, the
actuation floor (steps x control_dt) and their ratio, and the seam jumps: every window the
controller got is recorded with the sim time it arrived and replayed through the JTC-semantics
follower (``evaluation.seams``): the largest change of the commanded position and velocity
between two 2 ms samples.

    nice -n 10 python bench/async_inference.py [--latencies 0.05 0.15 0.3] [--episodes 1]
        [--tasks reach push pick_place] [--backend expert | --backend torch --checkpoint DIR]

A few episodes per cell on a shared 2-core machine: a smoke-scale measurement, not a tight estimate.
Writes bench/results/async-inference/{async_inference.json, async_inference.md}.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock
from trajectory_msgs.msg import JointTrajectory

from policytrim_ros import launcher
from policytrim_ros.evaluation.seams import seam_jumps
from policytrim_ros.execution.metrics import read_jsonl
from policytrim_ros.launcher import NodeSpec
from policytrim_ros.nodes import conversions as conv

OUT = Path(__file__).parent / 'results' / 'async-inference'
DT = 0.1


class WindowRecorder:
    """Every JointTrajectory on arm_controller/joint_trajectory with the sim time (/clock) it arrived."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node('async_bench_recorder', context=self.context)
        self.clock, self.messages = 0.0, []
        self.node.create_subscription(Clock, '/clock', self._on_clock, 10)
        self.node.create_subscription(JointTrajectory, 'arm_controller/joint_trajectory', self._on_window,
                                      QoSProfile(depth=1000))
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # shutting down
                return

    def _on_clock(self, msg):
        self.clock = conv.to_seconds(msg.clock)

    def _on_window(self, msg):
        self.messages.append((self.clock, msg))

    def episodes(self):
        """Per episode, its windows as (arrival, TimedTrajectory): holds (one point) end episodes."""
        out, current = [], []
        for arrival, msg in self.messages:
            if len(msg.points) == 1:
                if current:
                    out.append(current)
                current = []
            else:
                current.append((arrival, conv.msg_to_trajectory(msg)))
        return out + ([current] if current else [])

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def run_cell(args, latency: float, mode: str, tmp: Path) -> dict:
    params = launcher.package_share() / 'config' / 'sim.yaml'
    log = tmp / f'{mode}-{latency}.jsonl'
    log.unlink(missing_ok=True)   # policy_node would skip the episodes a previous run logged
    plugin_args = {'backend': args.backend, 'latency_s': latency}
    checkpoint = {'policy.checkpoint': args.checkpoint} if args.checkpoint else {}   # passed to the plug-in
    recorder = WindowRecorder()
    try:
        with launcher.Launch([
            NodeSpec('sim_node', [params], {'sim.step_mode': 'realtime', 'sim.real_time_factor': 1.0}),
            NodeSpec('policy_node', [params], {
                'policy.backend': 'plugin', 'policy.plugin': 'policytrim_ros.policy.examples.delayed:DelayedPolicy',
                'policy.plugin_args': json.dumps(plugin_args), 'execution.chunk_size': args.chunk_size,
                'execution.n_action_steps': args.h, 'execution.async_inference': mode == 'async',
                'episode.log_path': str(log), **checkpoint}),
        ], launcher.ros_env(), log_dir=tmp / f'logs-{mode}-{latency}') as run:
            deadline = time.monotonic() + 120.0   # node start-up on a loaded machine
            while not recorder.node.count_publishers('arm_controller/joint_trajectory'):
                if time.monotonic() > deadline or any(p.poll() is not None for p in run.processes.values()):
                    raise RuntimeError(f'policy_node did not come up: see {tmp}/logs-{mode}-{latency}')
                time.sleep(0.1)
            runner = NodeSpec('episode_runner', [params], {
                'runner.tasks': args.tasks, 'runner.episodes_per_task': args.episodes, 'runner.seed': args.seed,
                'runner.episode_timeout_s': 60.0})
            done = subprocess.run(runner.command(), env=launcher.ros_env(), capture_output=True, text=True,
                                  timeout=900)
            if done.returncode != 0:
                raise RuntimeError(f'episode_runner failed: {done.stderr[-2000:]}')
            time.sleep(0.5)   # the last hold
    finally:
        windows = recorder.episodes()
        recorder.close()
    episodes = read_jsonl(log)
    seams = [seam_jumps(w) for w in windows]
    ok = [e for e in episodes if e.success]
    steps = np.array([e.steps for e in episodes], dtype=float)
    wall = np.array([e.wall_clock_s for e in episodes])
    return {
        'latency_s': latency, 'mode': mode, 'episodes': len(episodes),
        'success_rate': len(ok) / max(1, len(episodes)),
        'steps': float(steps.mean()), 'inference_calls': float(np.mean([e.inference_calls for e in episodes])),
        'wall_clock_s': float(wall.mean()), 'floor_s': float(steps.mean() * DT),
        'wall_over_floor': float(np.mean(wall / (steps * DT))),
        'seam_position_jump': max((s.position for s in seams), default=0.0),
        'seam_velocity_jump': max((s.velocity for s in seams), default=0.0),
        'per_episode': [{'episode_id': e.episode_id, 'success': e.success, 'steps': e.steps,
                         'inference_calls': e.inference_calls, 'wall_clock_s': e.wall_clock_s,
                         'end_reason': e.end_reason} for e in episodes],
        'seams_per_episode': [{'position': s.position, 'velocity': s.velocity, 'seams': s.seams,
                               'position_at_s': s.position_at - w[0][0], 'velocity_at_s': s.velocity_at - w[0][0],
                               'arrivals_s': [round(a - w[0][0], 3) for a, _ in w],
                               'starts_s': [round(t.start_time - w[0][0], 3) for _, t in w]}
                              for s, w in zip(seams, windows)],
    }


COLUMNS = [('latency_s', '{:.2f}'), ('mode', '{}'), ('episodes', '{}'), ('success_rate', '{:.2f}'),
           ('steps', '{:.1f}'), ('inference_calls', '{:.1f}'), ('wall_clock_s', '{:.2f}'), ('floor_s', '{:.2f}'),
           ('wall_over_floor', '{:.2f}'), ('seam_position_jump', '{:.4f}'), ('seam_velocity_jump', '{:.3f}')]


def table(rows) -> str:
    lines = ['| ' + ' | '.join(c for c, _ in COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
    lines += ['| ' + ' | '.join(f.format(r[c]) for c, f in COLUMNS) + ' |' for r in rows]
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--latencies', type=float, nargs='+', default=[0.05, 0.15, 0.3])
    parser.add_argument('--modes', nargs='+', default=['sync', 'async'])
    parser.add_argument('--tasks', nargs='+', default=['reach', 'push', 'pick_place'])
    parser.add_argument('--episodes', type=int, default=1, help='episodes per task and cell')
    parser.add_argument('--seed', type=int, default=1000)
    parser.add_argument('--backend', default='expert')
    parser.add_argument('--checkpoint', default='')
    parser.add_argument('--chunk-size', type=int, default=32)
    parser.add_argument('--h', type=int, default=8)
    parser.add_argument('--out', type=Path, default=OUT)
    args = parser.parse_args()
    tmp = args.out / 'runs'
    rows = []
    for latency in args.latencies:
        for mode in args.modes:
            started = time.time()
            rows.append(run_cell(args, latency, mode, tmp))
            print(table(rows[-1:]).splitlines()[-1], f'({time.time() - started:.0f}s)', flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    command = 'nice -n 10 python bench/async_inference.py ' + ' '.join(
        f'--{k.replace("_", "-")} {" ".join(map(str, v)) if isinstance(v, list) else v}'
        for k, v in vars(args).items() if k not in ('out',) and v != '')
    meta = {'command': command, 'machine': platform.platform(), 'control_dt': DT,
            'sim': 'sim_node step_mode realtime, real_time_factor 1.0 (config/sim.yaml otherwise)'}
    (args.out / 'async_inference.json').write_text(json.dumps({**meta, 'cells': rows}, indent=1))
    md = (f'# Async inference: wall-clock per episode through the ROS nodes\n\n`{command}`\n\n'
          f'{meta["sim"]}; policy: {args.backend} behind DelayedPolicy (each call takes latency_s); '
          f'H={args.chunk_size}, h={args.h}, {args.episodes} episode(s) per task x {len(args.tasks)} tasks per cell '
          f'(seeds from {args.seed}). floor = steps x control_dt; seam jumps: largest change of the commanded '
          'position (rad) / velocity (rad/s) between 2 ms samples, windows replayed with their arrival times.\n\n'
          + table(rows) + '\n')
    (args.out / 'async_inference.md').write_text(md)
    print('\n' + table(rows))


if __name__ == '__main__':
    main()
