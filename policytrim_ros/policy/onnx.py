"""ONNX export of a VLA checkpoint and the onnxruntime backend that serves it.

The exported graph takes the raw inputs (image uint8, instruction embedding, state) and returns raw
absolute targets: normalization is inside it. The checkpoint's ``config.json`` is embedded in the
ONNX metadata, so a bare ``model.onnx`` is self-contained; when it sits in a checkpoint directory, its
weights hash must match that directory's ``config.json`` (a re-trained checkpoint needs a re-export).
A checkpoint with an efficiency head exports a second output, its horizon logits.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from policytrim_ros.policy.base import Observation
from policytrim_ros.policy.checkpoint import (CONFIG_FILE, ONNX_FILE, CheckpointError, load_checkpoint, load_json,
                                              parse_checkpoint_info)
from policytrim_ros.policy.torch_policy import vla_inputs, vla_metadata
from policytrim_ros.policy.vla.instruction import shared_encoder

INPUT_NAMES = ('image', 'text_embedding', 'state')
OUTPUT_NAME = 'action_chunk'
HORIZON_OUTPUT_NAME = 'horizon_logits'
METADATA_KEY = 'policytrim.checkpoint'
PARITY_TOLERANCE = 1e-3
"""Largest |onnxruntime - torch| (rad or m) accepted when an export is checked."""


class ExportError(RuntimeError):
    """The exported graph does not reproduce the torch model."""


class _ChunkAndHorizon(torch.nn.Module):
    """The graph of a model with an efficiency head: (chunk, horizon logits) from one pass."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image, text_embedding, state):
        return self.model.chunk_and_horizon_logits(image, text_embedding, state)


def export_onnx(checkpoint_dir: str | Path, output_path: str | Path | None = None) -> Path:
    """Export a checkpoint to one ONNX file (default ``<checkpoint_dir>/model.onnx``) and return its path.

    Inputs: image (B, h, w, 3) uint8, text_embedding (B, 384) float32, state (B, A) float32, with a
    dynamic batch B; output: action_chunk (B, H, A) float32, and with an efficiency head
    horizon_logits (B, K) float32. The file is checked against torch on a random input and
    ExportError is raised if an output differs by more than PARITY_TOLERANCE.
    """
    checkpoint_dir = Path(checkpoint_dir)
    model, config, _ = load_checkpoint(checkpoint_dir)
    info = load_json(checkpoint_dir / CONFIG_FILE)
    output_path = Path(output_path) if output_path is not None else checkpoint_dir / ONNX_FILE
    output_path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    example = (torch.randint(0, 256, (2, *config.image_size, 3), dtype=torch.uint8, generator=generator),
               torch.randn(2, config.text_embedding_dim, generator=generator),
               torch.randn(2, config.state_dim, generator=generator))
    batch = torch.export.Dim('batch')
    graph, outputs = (_ChunkAndHorizon(model), [OUTPUT_NAME, HORIZON_OUTPUT_NAME]) if config.horizons else \
        (model, [OUTPUT_NAME])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # exporter deprecation chatter, not about this model
        program = torch.onnx.export(graph, example, input_names=list(INPUT_NAMES), output_names=outputs,
                                    dynamic_shapes={name: {0: batch} for name in INPUT_NAMES},
                                    dynamo=True, optimize=True, verbose=False)
    program.model.metadata_props[METADATA_KEY] = json.dumps(info)
    program.save(str(output_path), external_data=False)

    session = ort.InferenceSession(str(output_path), providers=['CPUExecutionProvider'])
    got = session.run(outputs, dict(zip(INPUT_NAMES, (x.numpy() for x in example))))
    with torch.inference_mode():
        want = graph(*example)
    for name, a, b in zip(outputs, got, want if config.horizons else (want,)):
        error = float(np.abs(a - b.numpy()).max())
        if not error <= PARITY_TOLERANCE:
            raise ExportError(f'{output_path}: {name} differs from the torch model by {error:.3g} '
                              f'(> {PARITY_TOLERANCE})')
    return output_path


def default_providers() -> list[str]:
    """TensorRT and CUDA first when this onnxruntime build has them (onnxruntime-gpu), then the CPU."""
    available = ort.get_available_providers()
    gpu = [p for p in ('TensorrtExecutionProvider', 'CUDAExecutionProvider') if p in available]
    return gpu + ['CPUExecutionProvider']


class OnnxVLAPolicy:
    """``ChunkPolicy`` over an exported VLA: a checkpoint directory holding ``model.onnx``, or the file.

    providers: onnxruntime execution providers in order of preference (default ``default_providers()``).
    intra_op_num_threads: CPU threads per inference (0 = onnxruntime's default, one per core).
    """

    def __init__(self, checkpoint_dir_or_onnx: str | Path, providers: list[str] | None = None,
                 intra_op_num_threads: int = 0):
        path = Path(checkpoint_dir_or_onnx)
        onnx_path = path / ONNX_FILE if path.is_dir() else path
        if not onnx_path.is_file():
            raise CheckpointError(f'{onnx_path} not found; export it first: policytrim export-onnx '
                                  f'{path if path.is_dir() else path.parent}')
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_num_threads
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=providers or default_providers())
        except Exception as err:  # onnxruntime raises its own, unexported exception types
            raise CheckpointError(f'{onnx_path} is not a loadable ONNX model: {err}') from None
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is None:
            raise CheckpointError(f'{onnx_path} has no {METADATA_KEY!r} metadata: it was not written by '
                                  'policytrim export-onnx')
        try:
            info = json.loads(text)
        except json.JSONDecodeError as err:
            raise CheckpointError(f'{onnx_path}: {METADATA_KEY!r} metadata is not JSON: {err}') from None
        self.config, self.checkpoint_metadata, weights_sha256 = parse_checkpoint_info(info, str(onnx_path))
        if path.is_dir():
            directory_sha256 = parse_checkpoint_info(load_json(path / CONFIG_FILE), str(path / CONFIG_FILE))[2]
            if directory_sha256 != weights_sha256:
                raise CheckpointError(f'{onnx_path} was exported from other weights than {path / CONFIG_FILE} '
                                      f'describes (re-trained?); re-export it: policytrim export-onnx {path}')
        self.metadata = vla_metadata('onnx', self.config)
        self.encoder = shared_encoder()

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses, in order."""
        return self.session.get_providers()

    def reset(self) -> None:
        """Nothing per episode: instruction embeddings are cached per string across episodes."""

    def predict_action_chunk(self, observation: Observation) -> np.ndarray:
        """(H, A) float64 mean chunk of absolute joint targets (rad; gripper in m)."""
        inputs = vla_inputs(observation, self.config, self.encoder)
        return self.session.run([OUTPUT_NAME], dict(zip(INPUT_NAMES, inputs)))[0][0].astype(np.float64)

    def predict_chunk_and_horizon(self, observation: Observation) -> tuple[np.ndarray, int]:
        """((H, A) float64 mean chunk, h): the efficiency head's most likely executed length."""
        if not self.config.horizons:
            raise ValueError('this model has no efficiency head (its config names no horizons)')
        inputs = vla_inputs(observation, self.config, self.encoder)
        chunk, logits = self.session.run([OUTPUT_NAME, HORIZON_OUTPUT_NAME], dict(zip(INPUT_NAMES, inputs)))
        return chunk[0].astype(np.float64), self.config.horizons[int(logits[0].argmax())]
