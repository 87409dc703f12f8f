"""The compact VLA: presets, shapes, normalization, log-probabilities, checkpoints, ONNX parity."""
import json
import math
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from policytrim_ros.config import ConfigError
from policytrim_ros.policy.base import Observation, PolicyInputError, PolicyMetadata, camera_mismatch
from policytrim_ros.policy.checkpoint import (CheckpointError, file_sha256, integrity_record, load_checkpoint,
                                              load_tensors, save_checkpoint, save_tensors, seal_checkpoint)
from policytrim_ros.policy.factory import PolicyConfig, make_policy
from policytrim_ros.policy.onnx import OnnxVLAPolicy, export_onnx
from policytrim_ros.policy.torch_policy import TorchVLAPolicy
from policytrim_ros.policy.vla import PRESETS, VLAConfig, preset
from policytrim_ros.policy.vla.instruction import shared_encoder
from policytrim_ros.policy.vla.modeling_vla import VLAModel
from policytrim_ros.robots.arm import JOINT_NAMES

JOINTS = ('a', 'b', 'c')
TINY = VLAConfig(image_height=32, image_width=32, vision_channels=(4, 8, 8), vision_keypoints=4, state_dim=3,
                 action_dim=3, chunk_size=4, hidden_size=32, num_layers=1, num_heads=2, joint_names=JOINTS)
NORMALIZATION = ([0.1, -0.2, 0.3], [0.5, 2.0, 1.5], [0.01, 0.02, -0.03], [0.2, 0.4, 0.1])


def tiny_model(seed=0):
    torch.manual_seed(seed)
    model = VLAModel(TINY).eval()
    model.set_normalization(*NORMALIZATION)
    return model


def inputs(batch=2, seed=1, config=TINY):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (batch, *config.image_size, 3), dtype=torch.uint8, generator=g),
            torch.randn(batch, config.text_embedding_dim, generator=g),
            torch.randn(batch, config.state_dim, generator=g))


def observation(image_size=(32, 32), seed=2):
    rng = np.random.default_rng(seed)
    return Observation(image=rng.integers(0, 256, (*image_size, 3), dtype=np.uint8),
                       joint_positions=rng.normal(size=3), joint_velocities=np.zeros(3),
                       environment_state=np.zeros(10), instruction='push the cube to the goal', time=0.0, step=0)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A saved tiny checkpoint with its model.onnx."""
    directory = tmp_path_factory.mktemp('vla')
    save_checkpoint(directory, tiny_model(), TINY, {'task': 'push'})
    export_onnx(directory)
    return directory


def test_presets_have_about_2m_and_10m_parameters():
    counts = {name: VLAModel(config).num_parameters() for name, config in PRESETS.items()}
    assert 1.5e6 <= counts['vla-2m'] <= 2.5e6, counts
    assert 7.5e6 <= counts['vla-10m'] <= 12.5e6, counts


def test_preset_typo_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="unknown VLA preset 'vla-10M' \\(did you mean 'vla-10m'\\?\\)"):
        preset('vla-10M')
    assert preset('vla-2m', action_dim=4, state_dim=4, joint_names=('x', 'y', 'z', 'grip')).action_dim == 4


def test_config_rules_name_the_field_and_value():
    with pytest.raises(ValueError, match=(r'image_height \(100\) must be a multiple of 8 '
                                         r'\* vision_token_pool \(16\)')):
        VLAConfig(image_height=100)
    with pytest.raises(ValueError, match=r'vision_channels \(\[8, 16\]\) must be 3 integers >= 1'):
        VLAConfig(vision_channels=(8, 16))
    with pytest.raises(ValueError, match=r'state_dim \(4\) must equal action_dim \(7\)'):
        VLAConfig(state_dim=4)
    with pytest.raises(ValueError, match=r'joint_names has 7 names .* but action_dim is 4'):
        VLAConfig(state_dim=4, action_dim=4)
    with pytest.raises(ValueError, match=r'hidden_size \(100\) must be divisible by num_heads \(8\)'):
        VLAConfig(hidden_size=100, num_heads=8)
    assert VLAConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY


def test_forward_returns_a_float_chunk_per_batch_item():
    mean = tiny_model()(*inputs(batch=3))
    assert mean.shape == (3, TINY.chunk_size, TINY.action_dim) and mean.dtype == torch.float32


def test_normalization_lives_inside_the_model():
    model = tiny_model()
    identity = VLAModel(TINY).eval()
    identity.load_state_dict({k: v for k, v in model.state_dict().items() if 'mean' not in k and 'std' not in k},
                             strict=False)
    image, text, state = inputs()
    state_mean, state_std, delta_mean, delta_std = (torch.tensor(x) for x in NORMALIZATION)
    with torch.no_grad():
        head = model.normalized_delta(image, text, state)
        # the state is normalized before the state token ...
        assert torch.allclose(head, identity.normalized_delta(image, text, (state - state_mean) / state_std),
                              atol=1e-6)
        # ... and the output is the state plus the de-normalized offset, in raw units
        mean = model(image, text, state)
        assert torch.allclose(mean, state[:, None] + head * delta_std + delta_mean, atol=1e-6)
        actions = mean + 0.05
        target = (actions - state[:, None] - delta_mean) / delta_std
        assert torch.allclose(model.normalized_error(mean, actions), head - target, atol=1e-5)


def test_action_bounds_clamp_the_chunk_and_survive_export(tmp_path):
    bounded = replace(TINY, action_low=(-0.2, -0.2, -0.2), action_high=(0.2, 0.2, 0.2))
    model = tiny_model()
    clamped = VLAModel(bounded).eval()
    clamped.load_state_dict(model.state_dict())   # the bounds are config, not weights
    with torch.no_grad():
        free, mean = model(*inputs()), clamped(*inputs())
    assert (free.abs() > 0.2).any() and torch.equal(mean, free.clamp(-0.2, 0.2))
    save_checkpoint(tmp_path, clamped, bounded)
    export_onnx(tmp_path)
    chunk = OnnxVLAPolicy(tmp_path).predict_action_chunk(observation())
    assert np.abs(chunk).max() <= 0.2 + 1e-6
    with pytest.raises(ValueError, match=r'action_low \(2 values\) and action_high \(3 values\)'):
        replace(TINY, action_low=(0.0, 0.0), action_high=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r'action_low\[1\] \(2.0\) must be <= action_high\[1\] \(1.0\)'):
        replace(TINY, action_low=(0.0, 2.0, 0.0), action_high=(1.0, 1.0, 1.0))


def test_without_action_offsets_the_head_predicts_the_action_itself():
    config = replace(TINY, action_offsets=False)
    model = VLAModel(config).eval()
    model.set_normalization(*NORMALIZATION)
    image, text, state = inputs()
    with torch.no_grad():
        head = model.normalized_delta(image, text, state)
        delta_mean, delta_std = torch.tensor(NORMALIZATION[2]), torch.tensor(NORMALIZATION[3])
        assert torch.allclose(model(image, text, state), head * delta_std + delta_mean, atol=1e-6)
    assert VLAConfig(state_dim=4, action_offsets=False).state_dim == 4


def test_extended_model_keeps_every_trained_weight_and_starts_new_steps_at_step_h():
    model = tiny_model()
    longer = model.extended(7, generator=torch.Generator().manual_seed(0)).eval()
    assert longer.config == replace(TINY, chunk_size=7) and model.config.chunk_size == 4
    before, after = model.state_dict(), longer.state_dict()
    for key in before:
        if key != 'action_queries':
            assert torch.equal(before[key], after[key]), key
    queries = longer.action_queries.detach()
    assert torch.equal(queries[:4], model.action_queries.detach())
    noise = (queries[4:] - queries[3]).abs().max()
    assert 0 < noise < 0.5 * queries[:4].std()       # near step H's query, not identical
    with torch.no_grad():
        chunk = longer(*inputs())
    assert chunk.shape == (2, 7, 3)
    # the new steps predict nearly what step H does (the extra tokens shift attention a little)
    assert (chunk[:, 4:] - chunk[:, 3:4]).abs().max() < 0.1 * (chunk[:, 3] - chunk[:, 0]).abs().max() + 1e-2
    with pytest.raises(ValueError, match=r"chunk_size \(3\) must be >= the model's H \(4\)"):
        model.extended(3)


def test_set_normalization_rejects_a_zero_std():
    with pytest.raises(ValueError, match=r'delta_std\[1\] \(0\) must be finite and > 0 \(dimension b\)'):
        VLAModel(TINY).set_normalization(NORMALIZATION[0], NORMALIZATION[1], NORMALIZATION[2], [0.2, 0.0, 0.1])


def test_log_prob_matches_a_hand_computation():
    config = VLAConfig(image_height=16, image_width=16, vision_channels=(2, 2, 2), vision_keypoints=1,
                       vision_token_pool=1, state_dim=2, action_dim=2, chunk_size=2, hidden_size=8, num_layers=1,
                       num_heads=1, joint_names=('j1', 'j2'))
    model = VLAModel(config)
    with torch.no_grad():   # the head ignores its input: normalized offset (1, 0) at every step
        model.action_head.weight.zero_()
        model.action_head.bias.copy_(torch.tensor([1.0, 0.0]))
        model.log_std_param.fill_(math.log(0.5))
    model.set_normalization([0.0, 0.0], [1.0, 1.0], [0.1, 0.0], [0.2, 2.0])
    image, text, _ = inputs(batch=2, config=config)
    state = torch.tensor([[0.5, -1.0], [0.5, -1.0]])
    # mean = state + 1 * 0.2 + 0.1 = (0.8, -1.0); each step below is one std (0.2 * 0.5, 2 * 0.5) off in one joint
    actions = torch.tensor([[[0.9, -1.0], [0.8, 0.0]]] * 2)
    mask = torch.tensor([[True, True], [True, False]])
    per_step = -0.5 + 2 * math.log(2.0) - math.log(2 * math.pi)   # z = (1, 0): two dims with std 0.5
    log_prob = model.log_prob(image, text, state, actions, mask)
    assert torch.allclose(log_prob, torch.tensor([2 * per_step, per_step]), atol=1e-5)
    log_prob.sum().backward()
    assert model.log_std_param.grad is not None and model.action_head.bias.grad.abs().sum() > 0


def test_log_std_is_clamped_and_samples_have_the_policy_std():
    model = tiny_model()
    with torch.no_grad():
        model.log_std_param.copy_(torch.tensor([-10.0, math.log(0.5), 10.0]))
    assert model.log_std().tolist() == pytest.approx([TINY.log_std_min, math.log(0.5), TINY.log_std_max])
    mean = torch.zeros(4000, TINY.chunk_size, TINY.action_dim)
    samples = model.sample(mean, generator=torch.Generator().manual_seed(0))
    expected_std = model.log_std().exp() * model.delta_std
    assert torch.allclose(samples.std(dim=(0, 1)), expected_std, rtol=0.05)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path, model, TINY, {'task': 'push', 'steps': 10})
    loaded, config, metadata = load_checkpoint(tmp_path)
    assert config == TINY and metadata == {'task': 'push', 'steps': 10}
    with torch.no_grad():
        assert torch.equal(loaded(*inputs()), model(*inputs()))
    umask = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / 'shared', model, TINY, {})
    finally:
        os.umask(umask)
    for name in ('model.safetensors', 'config.json'):   # installed files must be readable by everyone
        assert (tmp_path / 'shared' / name).stat().st_mode & 0o777 == 0o644, name


def test_float16_checkpoint_is_half_the_size_and_loads_as_float32(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path / 'fp32', model, TINY)
    save_checkpoint(tmp_path / 'fp16', model, TINY, dtype=torch.float16)
    stored = load_tensors(tmp_path / 'fp16' / 'model.safetensors')
    assert all(t.dtype == torch.float16 for t in stored.values())
    sizes = [(tmp_path / d / 'model.safetensors').stat().st_size for d in ('fp32', 'fp16')]
    assert sizes[1] < 0.55 * sizes[0]
    loaded, _, _ = load_checkpoint(tmp_path / 'fp16')
    assert all(p.dtype == torch.float32 for p in loaded.state_dict().values())
    with torch.no_grad():
        assert torch.allclose(loaded(*inputs()), model(*inputs()), atol=1e-2)


def rewrite_weights(directory, tensors):
    """Write tensors as model.safetensors and update the hashes, as a consistent but wrong save would."""
    save_tensors(directory / 'model.safetensors', tensors)
    reseal(directory)


def reseal(directory):
    def update(data):
        data.update(weights_sha256=file_sha256(directory / 'model.safetensors'))
        data.update(integrity_sha256=integrity_record(data))
    edit_config(directory, update)


def edit_config(directory, change):
    data = json.loads((directory / 'config.json').read_text())
    change(data)
    (directory / 'config.json').write_text(json.dumps(data))


def truncate(directory):
    path = directory / 'model.safetensors'
    path.write_bytes(path.read_bytes()[:1000])


def garbage_with_matching_hash(directory):
    (directory / 'model.safetensors').write_bytes(b'not a safetensors file')
    reseal(directory)


def drop_tensor(directory):
    rewrite_weights(directory, {k: v for k, v in tiny_model().state_dict().items() if k != 'delta_std'})


def widen_head(directory):
    rewrite_weights(directory, {**tiny_model().state_dict(), 'action_head.bias': torch.zeros(5)})


def nan_weight(directory):
    rewrite_weights(directory, {**tiny_model().state_dict(), 'action_head.bias': torch.full((3,), math.nan)})


@pytest.mark.parametrize('damage, message', [
    (truncate, 'does not match the weights_sha256 .* modified or corrupted'),
    (garbage_with_matching_hash, 'not a readable safetensors file'),
    (lambda d: (d / 'config.json').unlink(), 'config.json not found: .* not a policytrim checkpoint'),
    (lambda d: (d / 'config.json').write_text('{"format": '), 'config.json is not valid JSON'),
    (lambda d: edit_config(d, lambda c: c.update(format='lerobot')), "format is 'lerobot'; expected 'policytrim-vla'"),
    (lambda d: edit_config(d, lambda c: c.update(version=2)), 'version 2 is not supported'),
    (lambda d: edit_config(d, lambda c: c['config'].update(chunk_sise=8)),
     "unknown config key 'chunk_sise' \\(did you mean 'chunk_size'\\?\\)"),
    (drop_tensor, r"missing tensors \['delta_std'\]"),
    (widen_head, r"tensor 'action_head.bias' has shape \(5,\); the model in config.json needs \(3,\)"),
    (nan_weight, "tensor 'action_head.bias' holds NaN"),
], ids=['truncated', 'corrupt', 'no-config', 'bad-json', 'wrong-format', 'wrong-version', 'bad-key',
        'missing-tensor', 'wrong-shape', 'nan'])
def test_damaged_checkpoints_raise_checkpoint_error(tmp_path, damage, message):
    save_checkpoint(tmp_path, tiny_model(), TINY, {})
    damage(tmp_path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)


BOUNDED = replace(TINY, action_low=(-0.5, -0.5, -0.5), action_high=(0.5, 0.5, 0.5))


def flip_action_offsets(data):
    data['config']['action_offsets'] = not data['config']['action_offsets']


def delete_action_bounds(data):
    del data['config']['action_low'], data['config']['action_high']


@pytest.mark.parametrize('edit, message', [
    (flip_action_offsets, r'edited after it was saved \(config.action_offsets changed\)'),
    (delete_action_bounds, r'\(config.action_high deleted, config.action_low deleted\)'),
    (lambda data: data['config'].update(cameras=['wrist_camera']), r'\(config.cameras changed\)'),
    (lambda data: data['metadata'].update(policytrim_stage=2), r'\(metadata changed\)'),
    (lambda data: data.update(weights_sha256='0' * 64), 'no field matches .* belongs to other weights'),
], ids=['action-offsets', 'action-bounds', 'cameras', 'metadata', 'other-weights'])
def test_a_config_json_edited_after_the_save_does_not_load(tmp_path, edit, message):
    """Each edit loads a valid config that changes what the same weights output (the first target
    moves by the state itself when action_offsets flips, by the clamp when the bounds go)."""
    model = tiny_model()
    model.config = BOUNDED
    save_checkpoint(tmp_path, model, BOUNDED, {'step': 3})
    edit_config(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=message):
        TorchVLAPolicy(tmp_path)


def test_a_checkpoint_saved_before_the_integrity_record_loads_once_sealed(tmp_path):
    save_checkpoint(tmp_path, tiny_model(), TINY, {'task': 'push'})
    edit_config(tmp_path, lambda data: data.pop('integrity_sha256'))
    with pytest.raises(CheckpointError, match=f"no 'integrity_sha256' record .* seal it: python "
                                              f'scripts/seal_checkpoint.py {tmp_path}'):
        load_checkpoint(tmp_path)
    weights = (tmp_path / 'model.safetensors').read_bytes()
    assert seal_checkpoint(tmp_path) and not seal_checkpoint(tmp_path)   # sealed once, then only checked
    assert load_checkpoint(tmp_path)[2] == {'task': 'push'}
    assert (tmp_path / 'model.safetensors').read_bytes() == weights
    edit_config(tmp_path, flip_action_offsets)
    with pytest.raises(CheckpointError, match='config.action_offsets changed'):
        seal_checkpoint(tmp_path)                       # never re-seals an edited config
    edit_config(tmp_path, lambda data: data.pop('integrity_sha256'))
    truncate(tmp_path)
    with pytest.raises(CheckpointError, match='not the ones config.json was saved with; not sealing'):
        seal_checkpoint(tmp_path)


def test_onnx_runtime_matches_torch(exported):
    torch_policy, onnx_policy = TorchVLAPolicy(exported), OnnxVLAPolicy(exported, intra_op_num_threads=1)
    assert onnx_policy.metadata.name == 'onnx' and onnx_policy.metadata.image_size == (32, 32)
    assert onnx_policy.checkpoint_metadata == {'task': 'push'}
    for seed in range(3):
        want = torch_policy.predict_action_chunk(observation(seed=seed))
        got = onnx_policy.predict_action_chunk(observation(seed=seed))
        assert got.shape == (TINY.chunk_size, TINY.action_dim) and got.dtype == np.float64
        assert np.abs(got - want).max() <= 1e-4
    batch = [x.numpy() for x in inputs(batch=3)]   # the exported batch dimension is dynamic
    got = onnx_policy.session.run(None, dict(zip(('image', 'text_embedding', 'state'), batch)))[0]
    with torch.no_grad():
        assert np.abs(got - torch_policy.model(*map(torch.from_numpy, batch)).numpy()).max() <= 1e-4


def test_a_bare_onnx_file_is_self_contained(exported, tmp_path):
    bare = tmp_path / 'policy.onnx'
    bare.write_bytes((exported / 'model.onnx').read_bytes())
    assert OnnxVLAPolicy(bare).metadata.joint_names == JOINTS


def test_onnx_policy_refuses_a_stale_or_missing_export(exported, tmp_path):
    stale = tmp_path / 'stale'
    stale.mkdir()
    (stale / 'model.onnx').write_bytes((exported / 'model.onnx').read_bytes())
    save_checkpoint(stale, tiny_model(seed=5), TINY, {})   # re-trained weights, old export
    with pytest.raises(CheckpointError, match='exported from other weights .* policytrim export-onnx'):
        OnnxVLAPolicy(stale)
    (stale / 'model.onnx').unlink()
    with pytest.raises(CheckpointError, match='model.onnx not found; export it first: policytrim export-onnx'):
        OnnxVLAPolicy(stale)


def test_policies_reject_a_wrong_image_size(exported):
    for policy in (TorchVLAPolicy(exported), OnnxVLAPolicy(exported)):
        with pytest.raises(PolicyInputError, match=r'image is \(48, 64, 3\) uint8; this policy needs \(32, 32, 3\)'):
            policy.predict_action_chunk(observation(image_size=(48, 64)))


def test_make_policy_checks_the_chunk_size_of_the_checkpoint(exported):
    for backend in ('torch', 'onnx'):
        config = PolicyConfig(backend=backend, checkpoint=str(exported))
        assert make_policy(config, TINY.chunk_size, 0.1, JOINTS).metadata.name == backend
        with pytest.raises(ConfigError, match=r'chunk_size \(16\) must equal the chunk size H \(4\)'):
            make_policy(config, 16, 0.1, JOINTS)
    with pytest.raises(ValueError, match='policy.checkpoint must name the checkpoint directory'):
        PolicyConfig(backend='onnx')


def test_instruction_encoder_gives_cached_unit_vectors():
    encoder = shared_encoder()
    first = encoder.encode('pick up the cube')
    assert first.shape == (384,) and first.dtype == np.float32
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    assert encoder.encode('pick up the cube') is first
    other = encoder.encode('push the cube to the goal')
    assert float(first @ other) < 0.99


def test_camera_mismatch_names_both_cameras_only_when_both_are_known():
    trained = PolicyMetadata('torch', 16, JOINT_NAMES, (96, 192), cameras=('scene_camera', 'wrist_camera'))
    assert (trained.num_cameras, trained.camera_image_size) == (2, (96, 96))
    assert camera_mismatch(trained, 0, 'scene_camera') is None
    assert camera_mismatch(trained, 1, 'wrist_camera') is None
    assert camera_mismatch(trained, 0, '') is None                                    # an unnamed frame: no claim
    unnamed = replace(trained, image_size=(96, 96), cameras=())                       # an older checkpoint
    assert camera_mismatch(unnamed, 0, 'wrist_camera') is None and unnamed.num_cameras == 1
    message = camera_mismatch(trained, 0, 'wrist_camera')
    assert "camera 1 come from 'wrist_camera'" in message and "'scene_camera'" in message
    assert PolicyMetadata('expert', 16, JOINT_NAMES, None).num_cameras == 0


def test_vla_config_checks_its_cameras_tile_the_image():
    with pytest.raises(ValueError, match='split into 3 equal tiles'):
        VLAConfig(image_width=128, cameras=('a', 'b', 'c'))
    with pytest.raises(ValueError, match='each once'):
        VLAConfig(image_width=192, cameras=('a', 'a'))
