"""Where rollouts run: the engine a run's ``rollouts`` config names (``workers.RolloutsConfig``)."""
from __future__ import annotations

from policytrim_ros.training.workers import RolloutPool, RolloutsConfig, RolloutSetup


def open_rollouts(setup: RolloutSetup, workers: int, config: RolloutsConfig | None = None,
                  out_dir: str | None = None):
    """The rollout pool ``config`` asks for: a ``RolloutPool`` of ``workers`` processes (engine
    'local'), or a ``RayRolloutPool`` (engine 'ray': simulators, or robots with ``config.robots``,
    which keep their episodes under ``<out_dir>/robots`` unless ``config.robot_run_dir`` says where).
    Both are context managers with ``collect(weights, jobs)``."""
    config = config or RolloutsConfig()
    if config.engine == 'ray':
        from policytrim_ros.training.ray_pool import RayRolloutPool
        return RayRolloutPool(setup, config, out_dir)
    return RolloutPool(setup, workers)
