"""Training episodes run by a deployed policy (policy_node) for a trainer in another process.

The trainer (``nodes/trainer_node``) runs the same GRPO loop as ``policytrim train`` but gets its
rollouts from the robot (or the simulator) through policy_node. Per episode it sends an
``EpisodePlan`` (what to sample, from which seed, at which h, under which weights version); the node
runs the episode with ``episode_policy`` and, when it ends, writes ``episode_rollout``'s record
with ``save_rollout`` before it publishes the episode's stats. Weights reach the node as a
safetensors file, loaded by ``load_weights`` only when its sha256 matches and every tensor fits.

``EpisodeStore`` keeps each finished rollout on disk under a key of the weights' sha256 and the
job: a trainer restarted at any instant reuses the episodes it already has (none is run twice) and
can never score an episode against weights it did not run.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from policytrim_ros import constants as C
from policytrim_ros.execution.config import ExecutionConfig
from policytrim_ros.execution.executor import ChunkRecord
from policytrim_ros.execution.metrics import EpisodeMetrics
from policytrim_ros.policy.checkpoint import (WEIGHTS_FILE, CheckpointError, file_sha256, load_checkpoint,
                                              load_tensors)
from policytrim_ros.policy.vla.modeling_vla import HorizonHead, VLAModel
from policytrim_ros.training.exploration import ChunkNoise, ExplorationConfig
from policytrim_ros.training.horizon import HorizonRollout, HorizonSamplingPolicy
from policytrim_ros.training.rollout import Rollout, SamplingVLAPolicy, finish_rollout

SAMPLES = ('mean', 'chunk', 'horizon')


@dataclass(frozen=True)
class EpisodePlan:
    """How a deployed policy runs one training episode (the ConfigureEpisode request).

    sample: 'mean' (the policy's means, as deployed), 'chunk' (each chunk drawn around the mean
        with ``exploration`` noise from ``sampling_seed``: Stage 1 and 2) or 'horizon' (mean chunks,
        each call's h drawn from the efficiency head: ``forced`` first, then drawn or ``greedy``).
    n_action_steps: h of every window (the longest with sample horizon); 0 = the node's own.
    weights_version: the weights the episode must run. record_path: where the rollout goes ('' = none).
    """

    episode_id: str
    weights_version: int
    sample: str = 'mean'
    sampling_seed: int = -1
    n_action_steps: int = 0
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    forced: tuple[int, ...] = ()
    greedy: bool = False
    record_path: str = ''

    def __post_init__(self):
        if not self.episode_id:
            raise ValueError('episode_id must be non-empty')
        if self.sample not in SAMPLES:
            raise ValueError(f"sample '{self.sample}' must be one of {list(SAMPLES)}")
        if self.sample != 'mean' and self.sampling_seed < 0:
            raise ValueError(f'sample {self.sample} needs a sampling_seed >= 0 (got {self.sampling_seed})')
        if self.n_action_steps < 0 or self.weights_version < 0:
            raise ValueError(f'n_action_steps ({self.n_action_steps}) and weights_version '
                             f'({self.weights_version}) must be >= 0')
        if (self.forced or self.greedy) and self.sample != 'horizon':
            raise ValueError('forced and greedy choose the efficiency head\'s h: they need sample horizon')

    @property
    def seed(self) -> int:
        """The sampling seed the episode's stats carry (-1 = means)."""
        return -1 if self.sample == 'mean' else self.sampling_seed

    def execution(self, config: ExecutionConfig) -> ExecutionConfig:
        """The node's execution config for this episode: its h, and horizon learned to sample h. Training
        episodes run synchronously: a rollout's log-probabilities are of each chunk's first h rows,
        which async inference would partly skip as stale."""
        from dataclasses import replace
        h = self.n_action_steps or config.n_action_steps
        if not 1 <= h <= config.chunk_size:
            raise ValueError(f'n_action_steps {h} must be in [1, chunk_size ({config.chunk_size})]')
        return replace(config, n_action_steps=h, horizon='learned' if self.sample == 'horizon' else config.horizon,
                       async_inference=False)


def episode_policy(plan: EpisodePlan, model: VLAModel):
    """The policy that runs ``plan``'s episode on ``model`` (None for sample mean: the node's own)."""
    if plan.sample == 'mean':
        return None
    generator = torch.Generator().manual_seed(plan.sampling_seed)
    if plan.sample == 'chunk':
        return SamplingVLAPolicy(model, generator, noise=ChunkNoise(plan.exploration))
    return HorizonSamplingPolicy(model, generator, forced=plan.forced, greedy=plan.greedy)


def episode_rollout(plan: EpisodePlan, policy, metrics: EpisodeMetrics, records: list[ChunkRecord],
                    config: ExecutionConfig) -> Rollout | HorizonRollout:
    """What the trainer's update needs of the finished episode (``config``: the plan's execution)."""
    if plan.sample == 'chunk':
        return finish_rollout(policy, config, metrics, records, metrics.instruction)
    if plan.sample == 'horizon':
        calls = len(records)
        features = (np.stack(policy.features[:calls]) if calls
                    else np.zeros((0, HorizonHead.input_size(policy.config)), np.float32))
        return HorizonRollout(metrics, features, np.asarray(policy.choices[:calls], np.int64))
    raise ValueError('an episode of the policy\'s means has no rollout to record')


# -- weights ---------------------------------------------------------------------------------------
class WeightsError(ValueError):
    """A weights file that must not be loaded: missing, corrupt, another hash, or another model."""


COMPATIBLE = ('joint_names', 'chunk_size', 'action_dim', 'state_dim', 'image_height', 'image_width', 'cameras')
"""What a hot-loaded checkpoint must share with the running model (the rest, e.g. an efficiency
head, may differ)."""


def load_weights(model: VLAModel, path: str | Path, sha256: str) -> VLAModel:
    """A new model with the weights of ``path``; ``model`` itself is untouched (the caller swaps on
    success, so a failed load leaves the running weights: rollback).

    path: a safetensors file of ``model``'s own tensors, or a checkpoint directory (``save_checkpoint``'s:
    its config may add or change an efficiency head, but must match ``COMPATIBLE``); sha256: of the file,
    or of the directory's model.safetensors.
    """
    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    if not weights.is_file():
        raise WeightsError(f'{weights} not found')
    actual = file_sha256(weights)
    if actual != sha256.lower():
        raise WeightsError(f'{weights} has sha256 {actual}, not {sha256} (a partial copy, or another file)')
    if path.is_dir():
        try:
            fresh, config, _ = load_checkpoint(path)
        except (CheckpointError, ValueError) as err:
            raise WeightsError(str(err)) from None
        different = [f for f in COMPATIBLE if getattr(config, f) != getattr(model.config, f)]
        if different:
            raise WeightsError(f'{path} is a model of another robot or camera setup: its ' + ', '.join(
                f'{f} {getattr(config, f)} (running: {getattr(model.config, f)})' for f in different))
        if not all(torch.isfinite(t).all() for t in fresh.state_dict().values() if t.is_floating_point()):
            raise WeightsError(f'{path} holds NaN or inf weights')
        return fresh.eval()
    try:
        tensors = load_tensors(path)
    except CheckpointError as err:
        raise WeightsError(str(err)) from None
    fresh = VLAModel(model.config)
    try:
        fresh.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise WeightsError(f'{path} does not fit the running model: {str(err).splitlines()[0]}') from None
    if not all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()):
        raise WeightsError(f'{path} holds NaN or inf weights')
    return fresh.eval()


# -- rollouts on disk ------------------------------------------------------------------------------
def save_rollout(path: str | Path, rollout: Rollout | HorizonRollout) -> None:
    """Write a rollout as one safetensors file (arrays as tensors, the rest as JSON metadata),
    atomically: a reader sees the whole file or none."""
    from safetensors.numpy import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(rollout, Rollout):
        arrays = {'images': rollout.images, 'states': rollout.states, 'chunks': rollout.chunks,
                  'executed': rollout.executed}
        meta = {'kind': 'chunk', 'instruction': rollout.instruction, 'refused': rollout.refused}
    else:
        arrays = {'features': rollout.features, 'choices': rollout.choices}
        meta = {'kind': 'horizon'}
    meta['metrics'] = rollout.metrics.to_dict()
    tmp = path.with_name(path.name + '.tmp')
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp),
              metadata={'policytrim_rollout': json.dumps(meta)})
    tmp.replace(path)


def load_rollout(path: str | Path) -> Rollout | HorizonRollout:
    """The rollout ``save_rollout`` wrote (ValueError naming the file if it is not one)."""
    from safetensors import safe_open
    from safetensors.numpy import load_file
    path = Path(path)
    try:
        with safe_open(str(path), 'np') as f:
            meta = json.loads((f.metadata() or {})['policytrim_rollout'])
        arrays = load_file(str(path))
        metrics = EpisodeMetrics(**meta['metrics'])
        if meta['kind'] == 'chunk':
            return Rollout(metrics, arrays['images'], arrays['states'], arrays['chunks'], arrays['executed'],
                           meta['instruction'], int(meta['refused']))
        return HorizonRollout(metrics, arrays['features'], arrays['choices'])
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
        raise ValueError(f'{path} is not a rollout record: {err}') from None


class EpisodeStore:
    """Finished rollouts under ``directory``, one file per (weights sha256, job) key."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(weights_sha256: str, job, setup=None) -> str:
        """The key of ``job`` (a RolloutJob; its episode_id aside) run under those weights and, when
        given, the RolloutSetup's sampling (what it samples, the noise, the step limit): a resumed run
        with other settings never reuses an episode of the old ones."""
        fields = {k: v for k, v in asdict(job).items() if k != 'episode_id'}
        if setup is not None:
            fields['setup'] = {'sample': setup.sample, 'exploration': asdict(setup.exploration),
                               'max_episode_steps': setup.max_episode_steps}
        text = json.dumps([weights_sha256, fields], sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.directory / f'{key}.safetensors'

    def get(self, key: str) -> Rollout | HorizonRollout | None:
        path = self.path(key)
        return load_rollout(path) if path.is_file() else None

    def put(self, key: str, rollout: Rollout | HorizonRollout) -> None:
        save_rollout(self.path(key), rollout)


INFRASTRUCTURE_END_REASONS = (C.END_JOINT_STATES_LOST, C.END_STOPPED, C.END_PREEMPTED, C.END_INFERENCE_FAILED,
                              C.END_INFERENCE_TIMEOUT, C.END_SERVER_ERROR, C.END_SERVER_LOST,
                              C.END_CONTROLLER_REJECTED, C.END_CONTROLLER_ABORTED)
"""End reasons that say the robot side failed, not the policy: such an episode is run again,
never scored (a simulator or driver that died, a node shut down, an episode replaced, a model
call that failed or hung, a controller that refused or dropped a goal). A chunk the safety checks
refused (error) and a tolerance abort stay the policy's."""


def is_scorable(metrics: EpisodeMetrics) -> bool:
    """Whether an episode's outcome belongs to the policy (see INFRASTRUCTURE_END_REASONS)."""
    return metrics.end_reason not in INFRASTRUCTURE_END_REASONS and math.isfinite(metrics.wall_clock_s)
