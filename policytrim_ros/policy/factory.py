"""Build a policy backend from its config."""
from __future__ import annotations

from dataclasses import dataclass

from policytrim_ros.config import suggest
from policytrim_ros.policy.base import ChunkPolicy

BACKENDS = ('expert', 'replay')


@dataclass(frozen=True)
class PolicyConfig:
    """Which backend serves chunks.

    backend: expert (the embedded tasks' scripted experts) or replay (chunks from a .npy file).
    checkpoint: what the backend loads: the (N, H, A) .npy file for replay; unused by expert.
    """

    backend: str = 'expert'
    checkpoint: str = ''

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"policy.backend '{self.backend}' is not one of {list(BACKENDS)}"
                             f'{suggest(self.backend, BACKENDS)}')
        if self.backend == 'replay' and not self.checkpoint:
            raise ValueError('policy.checkpoint must name the .npy file of chunks for the replay backend')


def make_policy(config: PolicyConfig, chunk_size: int, control_dt: float,
                joint_names: tuple[str, ...]) -> ChunkPolicy:
    """The backend named in ``config``, emitting chunks of ``chunk_size`` steps of ``control_dt`` s."""
    if config.backend == 'expert':
        from policytrim_ros.policy.expert import ScriptedExpertPolicy
        return ScriptedExpertPolicy(chunk_size=chunk_size, control_dt=control_dt)
    if config.backend == 'replay':
        from policytrim_ros.policy.replay import ReplayPolicy
        return ReplayPolicy(config.checkpoint, chunk_size, joint_names)
    raise AssertionError(config.backend)  # unreachable: PolicyConfig validates the name
