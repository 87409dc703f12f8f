"""episode_runner: drives evaluation episodes through the sim and the policy node, then summarizes.

For each task and seed it calls ``sim/reset_episode`` (the sim announces the episode with an
EpisodeEvent START, which starts the policy node), waits for the policy node's EpisodeStats, and
moves on. At the end it prints the per-episode table and the per-task summary, writes the summary
JSON, and exits (non-zero if an episode timed out).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from rclpy.node import Node

from policytrim_ros.execution import metrics as M
from policytrim_ros.msg import EpisodeStats
from policytrim_ros.nodes import conversions as conv
from policytrim_ros.nodes.params import declare_config
from policytrim_ros.nodes.runtime import RELIABLE, run_node
from policytrim_ros.srv import ResetEpisode


@dataclass(frozen=True)
class RunnerConfig:
    """Which episodes to run.

    tasks: task names, run in this order.
    episodes_per_task: episodes of each task.
    seed: seed of each task's first episode; episode k uses seed + k.
    episode_timeout_s: wall-clock seconds to wait for an episode's EpisodeStats.
    discovery_timeout_s: wall-clock seconds to wait for the sim and policy node to appear.
    summary_path: JSON file for the per-task summary ('' = do not write).
    reset_service: the sim's policytrim_ros/ResetEpisode service.
    episode_stats: the policy node's EpisodeStats topic.
    episode_event: the topic the policy node listens on for episode starts (checked for discovery).
    """

    tasks: tuple[str, ...] = ('reach', 'push', 'pick_place')
    episodes_per_task: int = 5
    seed: int = 0
    episode_timeout_s: float = 120.0
    discovery_timeout_s: float = 30.0
    summary_path: str = ''
    reset_service: str = 'sim/reset_episode'
    episode_stats: str = 'policytrim/episode_stats'
    episode_event: str = 'episode/event'

    def __post_init__(self):
        if not self.tasks:
            raise ValueError('tasks must name at least one task')
        if self.episodes_per_task < 1:
            raise ValueError(f'episodes_per_task ({self.episodes_per_task}) must be >= 1')


@dataclass(frozen=True)
class EpisodeRunnerConfig:
    """Everything episode_runner reads from its parameters."""

    runner: RunnerConfig = field(default_factory=RunnerConfig)


class EpisodeRunner(Node):
    """Resets the sim episode by episode and collects the policy node's EpisodeStats."""

    def __init__(self):
        super().__init__('episode_runner')
        self.config = declare_config(self, EpisodeRunnerConfig).runner
        cfg = self.config
        self.plan = [(task, cfg.seed + k, f'{task}-{k:03d}')
                     for task in cfg.tasks for k in range(cfg.episodes_per_task)]
        self.results: list[M.EpisodeMetrics] = []
        self.done, self.exit_code = False, 0
        self._pending: tuple | None = None      # (episode_id, deadline) of the episode in flight
        self._early: dict[str, EpisodeStats] = {}   # stats that arrived before their reset's answer
        self._resetting = False
        self._started = time.monotonic()
        self.reset_client = self.create_client(ResetEpisode, cfg.reset_service)
        self.create_subscription(EpisodeStats, cfg.episode_stats, self._on_stats, RELIABLE)
        self.create_timer(0.05, self._tick)

    def _discovered(self) -> bool:
        cfg = self.config
        return (self.reset_client.service_is_ready()
                and self.count_subscribers(cfg.episode_event) >= 1
                and self.count_publishers(cfg.episode_stats) >= 1)

    def _tick(self) -> None:
        if self.done or self._resetting:
            return
        if self._pending is None:
            if not self.plan:
                self._report()
                return
            if not self._discovered():
                if time.monotonic() - self._started > self.config.discovery_timeout_s:
                    self.get_logger().error('sim_node / policy_node not found; is everything launched '
                                            'with the same ROS_DOMAIN_ID?')
                    self.done, self.exit_code = True, 1
                return
            self._reset_next()
        elif time.monotonic() > self._pending[1]:
            self.get_logger().error(f'episode {self._pending[0]} timed out after '
                                    f'{self.config.episode_timeout_s}s; moving on')
            self.exit_code = 1
            self._pending = None

    def _reset_next(self) -> None:
        task, seed, episode_id = self.plan.pop(0)
        self._resetting = True
        future = self.reset_client.call_async(ResetEpisode.Request(task=task, seed=seed, episode_id=episode_id))
        future.add_done_callback(lambda f: self._on_reset(f, episode_id))

    def _on_reset(self, future, episode_id: str) -> None:
        self._resetting = False
        response = future.result()
        if response is None or not response.success:
            self.get_logger().error(f'reset of {episode_id} failed: {getattr(response, "message", "no response")}')
            self.exit_code = 1
            return
        self._pending = (episode_id, time.monotonic() + self.config.episode_timeout_s)
        early = self._early.pop(episode_id, None)
        self._early.clear()
        if early is not None:   # the episode ended before the reset's answer was processed
            self._on_stats(early)

    def _on_stats(self, msg: EpisodeStats) -> None:
        if self._pending is None or msg.episode_id != self._pending[0]:
            if self._resetting:   # its reset's answer may still be on its way
                self._early[msg.episode_id] = msg
            return
        self.results.append(conv.episode_stats_from_msg(msg))
        self._pending = None

    def _report(self) -> None:
        rows = [r.to_dict() for r in self.results]
        print(M.format_table(rows, M.EPISODE_COLUMNS), flush=True)
        summary = M.summarize_by_task(self.results)
        print(M.format_table([{'task': t, **s} for t, s in summary.items()], M.SUMMARY_COLUMNS), flush=True)
        if self.config.summary_path:
            M.write_json(self.config.summary_path, summary)
        self.done = True


def main(args=None) -> int:
    return run_node(EpisodeRunner, 'episode_runner', args)


if __name__ == '__main__':
    raise SystemExit(main())
