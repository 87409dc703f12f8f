"""Build a policy backend from its config."""
from __future__ import annotations

from dataclasses import dataclass

from policytrim_ros import resources
from policytrim_ros.config import ConfigError, suggest
from policytrim_ros.policy.base import ChunkPolicy

BACKENDS = ('expert', 'replay', 'torch', 'onnx')


@dataclass(frozen=True)
class PolicyConfig:
    """Which backend serves chunks.

    backend: expert (the scripted experts: the embedded arm's, or Meta-World's bundled ones for a
        robot with Meta-World's action columns), replay (chunks from a .npy file), torch
        (a VLA checkpoint run by PyTorch) or onnx (its exported model.onnx run by onnxruntime).
    checkpoint: what the backend loads: the (N, H, A) .npy file for replay, the checkpoint directory
        for torch and onnx; unused by expert. ``package://policytrim_ros/models/bc-wrist-h32-dagger`` names
        the shipped baseline in the installed package's share directory.
    device: torch device of the torch backend ('cpu', 'cuda', 'cuda:1'); onnx picks CUDA by itself
        when onnxruntime-gpu is installed.
    num_threads: CPU threads per inference for torch and onnx (0 = the library's default).
    """

    backend: str = 'expert'
    checkpoint: str = ''
    device: str = 'cpu'
    num_threads: int = 0

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"policy.backend '{self.backend}' is not one of {list(BACKENDS)}"
                             f'{suggest(self.backend, BACKENDS)}')
        if self.backend == 'replay' and not self.checkpoint:
            raise ValueError('policy.checkpoint must name the .npy file of chunks for the replay backend')
        if self.backend in ('torch', 'onnx') and not self.checkpoint:
            raise ValueError(f'policy.checkpoint must name the checkpoint directory for the {self.backend} backend')
        if not (self.device == 'cpu' or self.device == 'cuda' or self.device.startswith('cuda:')):
            raise ValueError(f"policy.device '{self.device}' must be 'cpu', 'cuda' or 'cuda:<index>'")
        if self.num_threads < 0:
            raise ValueError(f'policy.num_threads ({self.num_threads}) must be >= 0 (0 = library default)')


def checkpoint_chunk_size(checkpoint: str) -> int:
    """H of a learned checkpoint (a directory or ``package://`` URI), from its config.json alone."""
    from policytrim_ros.policy.checkpoint import read_checkpoint_config
    return read_checkpoint_config(resources.resolve(checkpoint))[0].chunk_size


def run_chunk_size(config: PolicyConfig, default: int) -> int:
    """H a run of ``config`` must use: a torch/onnx checkpoint's own, else ``default`` (the params
    file's execution.chunk_size, which the expert and replay backends follow)."""
    return checkpoint_chunk_size(config.checkpoint) if config.backend in ('torch', 'onnx') else default


def make_policy(config: PolicyConfig, chunk_size: int, control_dt: float,
                joint_names: tuple[str, ...]) -> ChunkPolicy:
    """The backend named in ``config``, emitting chunks of ``chunk_size`` steps of ``control_dt`` s.

    A learned backend's H and joints come from its checkpoint; they must equal ``chunk_size`` and
    ``joint_names`` (ConfigError otherwise). The expert backend is the one of the robot that
    ``joint_names`` names: Meta-World's action columns get ``MetaWorldSuiteExpertPolicy``.
    """
    if config.backend == 'expert':
        from policytrim_ros.robots.metaworld import ACTION_NAMES as METAWORLD_ACTION_NAMES
        if tuple(joint_names) == METAWORLD_ACTION_NAMES:
            from policytrim_ros.policy.metaworld_expert import MetaWorldSuiteExpertPolicy
            return MetaWorldSuiteExpertPolicy(chunk_size)
        from policytrim_ros.policy.arm_expert import ScriptedExpertPolicy
        return ScriptedExpertPolicy(chunk_size=chunk_size, control_dt=control_dt)
    checkpoint = resources.resolve(config.checkpoint)
    if config.backend == 'replay':
        from policytrim_ros.policy.replay import ReplayPolicy
        return ReplayPolicy(checkpoint, chunk_size, joint_names)
    if config.backend == 'torch':
        import torch

        from policytrim_ros.policy.torch_policy import TorchVLAPolicy
        if config.num_threads:
            torch.set_num_threads(config.num_threads)   # process-wide: the node runs one policy
        policy = TorchVLAPolicy(checkpoint, device=config.device)
    elif config.backend == 'onnx':
        from policytrim_ros.policy.onnx import OnnxVLAPolicy
        policy = OnnxVLAPolicy(checkpoint, intra_op_num_threads=config.num_threads)
    else:
        raise AssertionError(config.backend)  # unreachable: PolicyConfig validates the name
    meta = policy.metadata
    if meta.chunk_size != chunk_size:
        raise ConfigError(f'chunk_size ({chunk_size}) must equal the chunk size H ({meta.chunk_size}) of the '
                          f'checkpoint {config.checkpoint}: the model always predicts H steps (choose '
                          f'n_action_steps <= {meta.chunk_size} to run fewer)')
    if meta.joint_names != tuple(joint_names):
        raise ConfigError(f'the checkpoint {config.checkpoint} commands joints {list(meta.joint_names)} but the '
                          f'robot has {list(joint_names)}')
    return policy
