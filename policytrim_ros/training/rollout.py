"""RL rollouts: episodes whose chunks are sampled from the Gaussian VLA, recorded for the update.

A rollout runs the same closed loop as evaluation (``execution.episode.run_episode``: the same
executor, safety checks and step counting), with a policy that draws every chunk from
N(mean, std) and keeps what a PPO update needs per inference call: the plan-time image, state and
instruction, the sampled chunk, and how many of its actions were executed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from policytrim_ros import constants as C
from policytrim_ros.execution.config import ExecutionConfig, SafetyConfig
from policytrim_ros.execution.episode import run_episode
from policytrim_ros.execution.executor import ChunkRecord
from policytrim_ros.execution.metrics import EpisodeMetrics
from policytrim_ros.policy.base import Observation
from policytrim_ros.policy.torch_policy import vla_inputs, vla_metadata
from policytrim_ros.policy.vla.instruction import InstructionEncoder, shared_encoder
from policytrim_ros.policy.vla.modeling_vla import VLAModel
from policytrim_ros.training.exploration import ChunkNoise

if TYPE_CHECKING:
    from policytrim_ros.envs.arm import ArmEnv
    from policytrim_ros.envs.metaworld import MetaWorldEnv


class SamplingVLAPolicy:
    """``ChunkPolicy`` that samples each chunk from ``model``'s Gaussian and records every call.

    generator: the torch generator of the exploration noise (seed it per rollout for replays).
    noise: the exploration noise's structure along the chunk (default iid per step).
    After an episode, ``images`` (C, h, w, 3) uint8, ``states`` (C, A), ``chunks`` (C, H, A) and
    ``instructions`` hold the C calls in order.
    """

    def __init__(self, model: VLAModel, generator: torch.Generator, encoder: InstructionEncoder | None = None,
                 noise: ChunkNoise | None = None):
        self.model = model
        self.noise = noise or ChunkNoise()
        self.config = model.config
        self.metadata = vla_metadata('torch-sampling', self.config)
        self.encoder = encoder or shared_encoder()
        self.generator = generator
        self.reset()

    def reset(self) -> None:
        """Forget the recorded calls (a new episode)."""
        self.images: list[np.ndarray] = []
        self.states: list[np.ndarray] = []
        self.chunks: list[np.ndarray] = []
        self.instructions: list[str] = []

    def predict_action_chunk(self, observation: Observation) -> np.ndarray:
        """(H, A) float64 chunk drawn around the mean with ``noise`` (raw units)."""
        inputs = self.encode(observation)
        with torch.inference_mode():
            return self.decide(observation, inputs, self.forward(*(torch.from_numpy(x) for x in inputs)))[0]

    # The call in three parts, so a lockstep driver can batch the forward of several episodes'
    # policies (``training.lockstep``); predict_action_chunk is the three in a row.

    def encode(self, observation: Observation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batch-of-one model inputs (``vla_inputs``); raises PolicyInputError."""
        return vla_inputs(observation, self.config, self.encoder)

    def forward(self, image: torch.Tensor, text: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor]:
        """(mean (B, H, A),) of a batch of ``encode`` outputs (under inference_mode)."""
        return (self.model(image, text, state),)

    def decide(self, observation: Observation, inputs: tuple[np.ndarray, ...],
               outputs: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, None]:
        """The call on ``observation`` from its ``encode`` inputs and its rows (batch of one) of
        ``forward``'s outputs: ((H, A) float64 chunk drawn from this policy's generator, None: the
        executor's h)."""
        image, _, state = inputs
        chunk = self.noise.sample(self.model, outputs[0], self.generator)[0].numpy()
        self.images.append(image[0])
        self.states.append(state[0])
        self.chunks.append(chunk)
        self.instructions.append(observation.instruction)
        return chunk.astype(np.float64), None


@dataclass(frozen=True)
class Rollout:
    """One sampled episode.

    metrics: its outcome (success, steps S, inference calls, end reason ...).
    images: (C, h, w, 3) uint8 plan-time images of the C calls (executed, then the refused one).
    states: (C, A) float32 plan-time joint positions.
    chunks: (C, H, A) float32 sampled chunks.
    executed: (C,) int actions of each chunk that ran (h, fewer for the window that reached
        success or the step limit; 0 for a refused chunk).
    instruction: the episode's instruction.
    refused: the targets the safety check read of the last chunk, which it refused and which ended
        the episode (its would-be window h plus the next target, at most H); 0 when no chunk was
        refused. Its row is the last of images / states / chunks.
    """

    metrics: EpisodeMetrics
    images: np.ndarray
    states: np.ndarray
    chunks: np.ndarray
    executed: np.ndarray
    instruction: str
    refused: int = 0

    def executed_mask(self) -> np.ndarray:
        """(C, H) bool: True on the actions that ran, the steps a log-probability sums over."""
        return np.arange(self.chunks.shape[1])[None, :] < self.executed[:, None]

    def credited_mask(self, credit_refused: bool) -> np.ndarray:
        """(C, H) bool: the executed actions, and with ``credit_refused`` the refused chunk's checked
        targets (the action that ended the episode; without it a failure the safety limits cause is
        never charged to the chunk that caused it)."""
        mask = self.executed_mask()
        if credit_refused and self.refused:
            mask[-1, :self.refused] = True
        return mask


def collect_rollout(env: ArmEnv | MetaWorldEnv, policy: SamplingVLAPolicy, config: ExecutionConfig, task: str, seed: int,
                    safety: SafetyConfig | None = None, episode_id: str = '') -> Rollout:
    """Run one sampled episode of ``task`` from ``seed`` and return what the update needs.

    A chunk the safety checks reject ends the episode (reward 0) without moving the robot: it is
    kept as the last call with 0 executed actions and ``refused`` = the targets the check read, so
    the update may charge the failure to it (``GRPOConfig.credit_refused``).
    """
    metrics, records = run_episode(env, policy, config, task, seed, episode_id=episode_id, safety=safety)
    return finish_rollout(policy, config, metrics, records, env.instruction)


def finish_rollout(policy: SamplingVLAPolicy, config: ExecutionConfig, metrics: EpisodeMetrics,
                   records: list[ChunkRecord], instruction: str) -> Rollout:
    """The ``Rollout`` of an episode that ``policy`` played (``execution.episode.play_episode``'s
    metrics and records), here or on the robot (policy_node for trainer_node, ``training.episodes``)."""
    executed = [min(r.n_action_steps, metrics.steps - r.first_step) for r in records]
    calls = len(records)
    refused = 0
    if metrics.end_reason == C.END_ERROR and len(policy.chunks) > calls:   # sampled, then refused
        window = min(config.n_action_steps, config.max_episode_steps - metrics.steps)
        refused = min(window + 1, config.chunk_size)   # the executor checks the window and its next target
        executed.append(0)
        calls += 1
    executed = np.array(executed, dtype=np.int64)
    shape = (config.chunk_size, policy.config.action_dim)
    return Rollout(
        metrics=metrics,
        images=np.stack(policy.images[:calls]) if calls else np.zeros((0, *policy.config.image_size, 3), np.uint8),
        states=np.stack(policy.states[:calls]) if calls else np.zeros((0, policy.config.state_dim), np.float32),
        chunks=np.stack(policy.chunks[:calls]) if calls else np.zeros((0, *shape), np.float32),
        executed=executed,
        instruction=instruction,
        refused=refused,
    )
