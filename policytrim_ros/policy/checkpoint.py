"""Checkpoints as safetensors + JSON: never pickle, so loading a file cannot run code.

A VLA checkpoint is a directory:
    model.safetensors   the model's state dict (weights and normalization buffers)
    config.json         {"format": "policytrim-vla", "version": 1, "config": VLAConfig as a dict,
                         "metadata": {...caller's JSON...}, "weights_sha256": hex digest of model.safetensors,
                         "integrity_sha256": {"config.<field>": hex digest, ..., "metadata": hex digest}}
    model.onnx          optional, written by ``policytrim export-onnx``
Every config field changes what the weights output (action_offsets decides whether the head's
output is added to the state, action_low/high clamp the targets, joint_names and cameras order
the inputs), so each one, and the metadata, is sealed to the weights: its digest is the SHA-256
of (weights_sha256, name, value) in canonical JSON. Loading recomputes them and names any field
that was changed, added or deleted since the save (``integrity_record``).
Trainers store optimizer and RNG state the same way (``save_trainer_state``). Files are
written to a temporary name and renamed, so an interrupted save never leaves a half-written file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from policytrim_ros.config import ConfigError
from policytrim_ros.policy.vla.configuration_vla import VLAConfig

FORMAT = 'policytrim-vla'
VERSION = 1
WEIGHTS_FILE = 'model.safetensors'
CONFIG_FILE = 'config.json'
ONNX_FILE = 'model.onnx'
TRAINER_TENSORS_FILE = 'trainer.safetensors'
TRAINER_META_FILE = 'trainer.json'


INTEGRITY_KEY = 'integrity_sha256'
SEAL_COMMAND = 'python scripts/seal_checkpoint.py'
"""Adds the integrity record to a checkpoint saved before there was one (after checking its config)."""


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, tampered with, or does not fit the model; the message names
    the file and key. A ValueError: bad input, which the CLI and the nodes report in one line (rc 2)."""


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _replace_atomically(path: Path, write) -> None:
    tmp = path.with_name(path.name + '.tmp')
    write(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)   # safetensors creates its file owner-only; installs must be readable
    os.replace(tmp, path)


def save_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON; a TypeError names a value that is not JSON."""
    text = json.dumps(data, indent=2) + '\n'   # raises before anything is written
    _replace_atomically(Path(path), lambda tmp: tmp.write_text(text))


def load_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object; CheckpointError if the file is missing, unreadable or not an object."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path} not found')
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f'{path} is not valid JSON: {err}') from None
    if not isinstance(data, dict):
        raise CheckpointError(f'{path} must hold a JSON object, got {type(data).__name__}')
    return data


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write named tensors to a safetensors file (copied to contiguous CPU memory first)."""
    cpu = {k: v.detach().to('cpu').contiguous().clone() for k, v in tensors.items()}
    _replace_atomically(Path(path), lambda tmp: save_file(cpu, str(tmp)))


def load_tensors(path: str | Path, device: str = 'cpu') -> dict[str, torch.Tensor]:
    """Named tensors of a safetensors file; CheckpointError if it is missing, truncated or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path} not found')
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f'{path} is not a readable safetensors file (truncated or corrupt?): {err}') from None


def save_checkpoint(directory: str | Path, model: torch.nn.Module, config: VLAConfig,
                    metadata: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created); returns it.

    metadata: JSON-serializable facts about the run (task, dataset, steps, scores).
    dtype: store floating-point tensors in this dtype (torch.float16 halves a shipped checkpoint;
        ``load_checkpoint`` casts them back to float32), or None to keep the model's dtype.
    A ``model.onnx`` left from earlier weights stays, but no longer loads (its weights hash differs).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = model.state_dict()
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    save_tensors(directory / WEIGHTS_FILE, tensors)
    info = {'format': FORMAT, 'version': VERSION, 'config': config.to_dict(), 'metadata': dict(metadata or {}),
            'weights_sha256': file_sha256(directory / WEIGHTS_FILE)}
    info = json.loads(json.dumps(info))   # seal what loading will read (int keys become strings, tuples lists)
    save_json(directory / CONFIG_FILE, {**info, INTEGRITY_KEY: integrity_record(info)})
    return directory


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(',', ':'), ensure_ascii=True).encode()


def integrity_record(data: dict[str, Any]) -> dict[str, str]:
    """{'config.<field>': digest for each field of ``data['config']``, 'metadata': digest} of a
    config.json object, each digest the hex SHA-256 of [weights_sha256, name, value] in canonical
    JSON (sorted keys, no spaces): a value cannot change, appear or vanish, and the config cannot
    move to other weights, without a digest changing."""
    entries = {f'config.{k}': v for k, v in data['config'].items()}
    entries['metadata'] = data['metadata']
    return {name: hashlib.sha256(_canonical([data['weights_sha256'], name, value])).hexdigest()
            for name, value in sorted(entries.items())}


def verify_integrity(data: dict[str, Any], source: str) -> None:
    """Raise CheckpointError naming every field of config.json object ``data`` (read from
    ``source``) that differs from what was saved with the weights, or if it has no record."""
    record = data.get(INTEGRITY_KEY)
    if record is None:
        fix = ('re-export it from its (sealed) checkpoint: policytrim export-onnx' if source.endswith('.onnx') else
               'if it is (compare it with the run that made it), seal it: '
               f'{SEAL_COMMAND} {Path(source).parent}')
        raise CheckpointError(f'{source} has no {INTEGRITY_KEY!r} record (saved before config.json was sealed '
                              'to its weights), so nothing shows that its config is the one the weights were '
                              f'trained with; {fix}')
    if not isinstance(record, dict) or not all(isinstance(v, str) for v in record.values()):
        raise CheckpointError(f'{source}: {INTEGRITY_KEY!r} must map field names to hex digests')
    expected = integrity_record(data)
    changes = ([f'{k} changed' for k in sorted(expected.keys() & record.keys()) if expected[k] != record[k]]
               + [f'{k} deleted' for k in sorted(record.keys() - expected.keys())]
               + [f'{k} added' for k in sorted(expected.keys() - record.keys())])
    if len(changes) == len(expected) == len(record):
        raise CheckpointError(f'{source}: no field matches its {INTEGRITY_KEY!r} digest: weights_sha256 was '
                              'edited, or this config.json belongs to other weights; restore the config.json '
                              f'saved with {WEIGHTS_FILE}')
    if changes:
        raise CheckpointError(f"{source} was edited after it was saved ({', '.join(changes)}); these fields "
                              'change what the weights output, and the weights were trained with the saved values. '
                              'Restore the config.json saved with the weights; to change a field, load the '
                              'checkpoint, change it and save it anew (save_checkpoint)')


def save_trainer_state(directory: str | Path, optimizer: torch.optim.Optimizer, meta: dict[str, Any],
                       tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write what resuming a run needs next to its checkpoint: ``trainer.safetensors`` (the
    optimizer's state tensors plus the caller's ``tensors``, e.g. RNG states) and ``trainer.json``
    (the optimizer's param groups plus the caller's JSON ``meta``, e.g. the step)."""
    directory = Path(directory)
    state = optimizer.state_dict()
    saved = {f'state.{i}.{k}': v for i, s in state['state'].items() for k, v in s.items()}
    save_tensors(directory / TRAINER_TENSORS_FILE, {**saved, **(tensors or {})})
    save_json(directory / TRAINER_META_FILE, {**meta, 'param_groups': state['param_groups']})


def load_trainer_state(directory: str | Path,
                       optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore ``optimizer`` from ``save_trainer_state`` files; return the caller's (meta, tensors)."""
    directory = Path(directory)
    meta = load_json(directory / TRAINER_META_FILE)
    state: dict[str, Any] = {'param_groups': meta.pop('param_groups'), 'state': {}}
    tensors = {}
    for key, value in load_tensors(directory / TRAINER_TENSORS_FILE).items():
        if key.startswith('state.'):
            _, i, name = key.split('.', 2)
            state['state'].setdefault(int(i), {})[name] = value
        else:
            tensors[key] = value
    optimizer.load_state_dict(state)
    return meta, tensors


def _parse(data: dict[str, Any], source: str) -> VLAConfig:
    if not isinstance(data, dict):
        raise CheckpointError(f'{source}: must hold a JSON object, got {type(data).__name__}')
    if data.get('format') != FORMAT:
        raise CheckpointError(f"{source}: format is {data.get('format')!r}; expected {FORMAT!r}")
    if data.get('version') != VERSION:
        raise CheckpointError(f"{source}: version {data.get('version')!r} is not supported (this build reads "
                              f'version {VERSION})')
    for key, kind in (('config', dict), ('metadata', dict), ('weights_sha256', str)):
        if not isinstance(data.get(key), kind):
            raise CheckpointError(f'{source}: key {key!r} must be a {kind.__name__}, got {data.get(key)!r}')
    try:
        return VLAConfig.from_dict(data['config'])
    except ConfigError as err:
        raise CheckpointError(f'{source}: config: {err}') from None


def parse_checkpoint_info(data: dict[str, Any], source: str) -> tuple[VLAConfig, dict[str, Any], str]:
    """(config, metadata, weights_sha256) from a ``config.json`` object read from ``source`` (for
    messages), its integrity record verified."""
    config = _parse(data, source)
    verify_integrity(data, source)
    return config, data['metadata'], data['weights_sha256']


def seal_checkpoint(directory: str | Path) -> bool:
    """Add the integrity record to the config.json of a checkpoint saved before there was one; True
    if it was added, False if the checkpoint was sealed already (and is intact).

    Only the record is written: the weights and every other byte of meaning stay. It vouches for
    the config as it is now, so check first that it is the one the weights were trained with.
    CheckpointError if config.json is invalid, the weights do not match weights_sha256, or an
    existing record does not match.
    """
    directory = Path(directory)
    path = directory / CONFIG_FILE
    data = load_json(path)
    _parse(data, str(path))
    if file_sha256(directory / WEIGHTS_FILE) != data['weights_sha256']:
        raise CheckpointError(f'{directory / WEIGHTS_FILE} does not match the weights_sha256 in {path}: '
                              'these weights are not the ones config.json was saved with; not sealing')
    if INTEGRITY_KEY in data:
        verify_integrity(data, str(path))
        return False
    save_json(path, {**data, INTEGRITY_KEY: integrity_record(data)})
    return True


def read_checkpoint_config(directory: str | Path) -> tuple[VLAConfig, dict[str, Any], str]:
    """(config, metadata, weights_sha256) from ``config.json`` of a checkpoint, validated."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f'checkpoint directory not found: {directory}')
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f'{path} not found: {directory} is not a policytrim checkpoint directory')
    return parse_checkpoint_info(load_json(path), str(path))


def _check_tensors(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f'{path} does not fit the model in config.json: missing tensors {missing[:5]}'
                              f'{" ..." if len(missing) > 5 else ""}, unexpected tensors {unexpected[:5]}'
                              f'{" ..." if len(unexpected) > 5 else ""}')
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(f'{path}: tensor {name!r} has shape {tuple(tensor.shape)}; the model in '
                                  f'config.json needs {tuple(expected[name].shape)}')
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f'{path}: tensor {name!r} holds NaN or infinite values')


def load_checkpoint(directory: str | Path, device: str = 'cpu'):
    """(model in eval mode, VLAConfig, metadata dict) from a checkpoint directory.

    Raises CheckpointError when a file is missing or corrupt, the format or version is unknown, the
    config is invalid or was edited after the save (``verify_integrity``), or the tensors do not fit
    the configured model (missing, unexpected, shape).
    """
    from policytrim_ros.policy.vla.modeling_vla import VLAModel
    directory = Path(directory)
    config, metadata, sha256 = read_checkpoint_config(directory)
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f'{path} not found')
    if file_sha256(path) != sha256:
        raise CheckpointError(f'{path} does not match the weights_sha256 in {directory / CONFIG_FILE}: '
                              'the file was modified or corrupted after it was saved')
    tensors = {k: v.float() if v.is_floating_point() else v   # float16 shipped weights run in float32
               for k, v in load_tensors(path, device=device).items()}
    model = VLAModel(config).to(device)
    _check_tensors(path, tensors, model.state_dict())
    model.load_state_dict(tensors)
    return model.eval(), config, metadata
