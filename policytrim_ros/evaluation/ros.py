"""Episodes through the ROS nodes: sim_node + policy_node as processes, driven by episode_runner.

The same thing ``ros2 launch policytrim_ros sim.launch.py run_episodes:=true`` does, with the
package's own launcher (the launch package is not installable from PyPI).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from policytrim_ros import launcher
from policytrim_ros.execution import metrics as M


def run_ros_episodes(params: Path, policy_overrides: dict, tasks: list[str], episodes: int, seed: int,
                     out_dir: Path, env: dict, episode_timeout_s: float = 120.0) -> list[M.EpisodeMetrics]:
    """Run ``episodes`` per task through the nodes; return policy_node's per-episode log.

    ``policy_overrides`` are policy_node parameters on top of ``params`` (e.g. n_action_steps).
    Node logs go to ``out_dir/logs``; the runner's tables go to stdout.
    """
    log = out_dir / 'episodes.jsonl'
    log.unlink(missing_ok=True)
    nodes = [launcher.NodeSpec('sim_node', [params]),
             launcher.NodeSpec('policy_node', [params], {**policy_overrides, 'episode.log_path': str(log)})]
    runner = launcher.NodeSpec('episode_runner', [params], {
        'runner.tasks': list(tasks), 'runner.episodes_per_task': episodes, 'runner.seed': seed,
        'runner.episode_timeout_s': episode_timeout_s, 'runner.summary_path': str(out_dir / 'summary.json')})
    with launcher.Launch(nodes, env, log_dir=out_dir / 'logs') as launch:
        code = subprocess.run(runner.command(), env=env).returncode
        for name, proc in launch.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f'{name} exited early with code {proc.returncode}; see {out_dir / "logs"}')
    if code != 0:
        raise RuntimeError(f'episode_runner failed with exit code {code}; see {out_dir / "logs"}')
    return M.read_jsonl(log)
