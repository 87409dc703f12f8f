"""Build a policy backend from its config."""
from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from policytrim_ros import resources
from policytrim_ros.config import IMPORT_SPEC, ConfigError, import_object, suggest
from policytrim_ros.policy.base import ChunkPolicy, PolicyMetadata
from policytrim_ros.policy.remote import RemoteConfig

BACKENDS = ('expert', 'replay', 'torch', 'onnx', 'remote', 'plugin')


@dataclass(frozen=True)
class PolicyConfig:
    """Which backend serves chunks.

    backend: expert (the scripted experts: the embedded arm's, or Meta-World's bundled ones for a
        robot with Meta-World's action columns), replay (chunks from a .npy file), torch
        (a VLA checkpoint run by PyTorch), onnx (its exported model.onnx run by onnxruntime), remote
        (a policy server speaking openpi's websocket protocol: policy.remote) or plugin (your
        ChunkPolicy class, policy.plugin; docs/policy-server.md).
    checkpoint: what the backend loads: the (N, H, A) .npy file for replay, the checkpoint directory
        for torch and onnx, passed to a plug-in as is; unused by expert and remote.
        ``package://policytrim_ros/models/bc-wrist-h32-dagger`` names the shipped baseline in the installed
        package's share directory.
    device: torch device of the torch backend ('cpu', 'cuda', 'cuda:1'); onnx picks CUDA by itself
        when onnxruntime-gpu is installed.
    num_threads: CPU threads per inference for torch and onnx (0 = the library's default).
    plugin: 'package.module:Class' of the plugin backend, importable on the robot's PYTHONPATH; it is
        called with keyword arguments chunk_size, control_dt, joint_names, checkpoint and those of
        plugin_args, and must satisfy the ChunkPolicy protocol.
    plugin_args: YAML mapping of extra keyword arguments for the plug-in ('' = none), e.g.
        '{latency_s: 0.2}'.
    remote: the policy server of the remote backend and its observation/action mapping.
    """

    backend: str = 'expert'
    checkpoint: str = ''
    device: str = 'cpu'
    num_threads: int = 0
    plugin: str = ''
    plugin_args: str = ''
    remote: RemoteConfig = field(default_factory=RemoteConfig)

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
        if self.backend == 'plugin' and not IMPORT_SPEC.match(self.plugin):
            raise ValueError(f"policy.plugin '{self.plugin}' must name the plug-in class as 'package.module:Class'")
        self.plugin_kwargs   # noqa: B018 (validates plugin_args)

    @property
    def plugin_kwargs(self) -> dict:
        """plugin_args as a dict (ValueError if it is not a YAML mapping with string keys)."""
        try:
            args = yaml.safe_load(self.plugin_args) if self.plugin_args.strip() else {}
        except yaml.YAMLError as err:
            raise ValueError(f'policy.plugin_args {self.plugin_args!r} is not YAML: {err}') from None
        if not isinstance(args, dict) or not all(isinstance(k, str) and k.isidentifier() for k in args):
            raise ValueError(f"policy.plugin_args {self.plugin_args!r} must be a mapping of keyword arguments "
                             "('{latency_s: 0.2}')")
        return args


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
    if config.backend == 'remote':
        from policytrim_ros.policy.remote import RemotePolicy
        return RemotePolicy(config.remote, chunk_size, control_dt, tuple(joint_names))
    checkpoint = resources.resolve(config.checkpoint)
    if config.backend == 'plugin':
        policy = load_plugin(config, checkpoint, chunk_size, control_dt, tuple(joint_names))
        return check_policy(policy, f'the plug-in {config.plugin}', chunk_size, joint_names)
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
    return check_policy(policy, f'the checkpoint {config.checkpoint}', chunk_size, joint_names)


def check_policy(policy: ChunkPolicy, what: str, chunk_size: int, joint_names: tuple[str, ...]) -> ChunkPolicy:
    """``policy`` if its H and joints are the run's (ConfigError naming ``what`` otherwise)."""
    meta = policy.metadata
    if meta.chunk_size != chunk_size:
        raise ConfigError(f'chunk_size ({chunk_size}) must equal the chunk size H ({meta.chunk_size}) of '
                          f'{what}: the model always predicts H steps (choose n_action_steps <= {meta.chunk_size} '
                          'to run fewer)')
    if meta.joint_names != tuple(joint_names):
        raise ConfigError(f'{what} commands joints {list(meta.joint_names)} but the robot has {list(joint_names)}')
    return policy


def load_plugin(config: PolicyConfig, checkpoint: str, chunk_size: int, control_dt: float,
                joint_names: tuple[str, ...]) -> ChunkPolicy:
    """Import ``config.plugin`` ('package.module:Class') and build it (ConfigError naming policy.plugin
    if it cannot be imported or built, or if what it builds is not a ChunkPolicy)."""
    target = import_object(config.plugin, 'policy.plugin')
    kwargs = dict(chunk_size=chunk_size, control_dt=control_dt, joint_names=joint_names, checkpoint=checkpoint,
                  **config.plugin_kwargs)
    try:
        policy = target(**kwargs)
    except TypeError as err:
        raise ConfigError(f"policy.plugin '{config.plugin}' cannot be built with keyword arguments "
                          f'{sorted(kwargs)}: {err}') from None
    missing = [name for name in ('metadata', 'reset', 'predict_action_chunk') if not hasattr(policy, name)]
    if missing or not isinstance(policy.metadata, PolicyMetadata):
        raise ConfigError(f"policy.plugin '{config.plugin}' built a {type(policy).__name__}, which is not a "
                          f'ChunkPolicy: it needs a PolicyMetadata metadata, reset() and predict_action_chunk()'
                          + (f' (missing: {missing})' if missing else ''))
    return policy
