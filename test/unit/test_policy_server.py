"""The openpi websocket protocol both ways: ``policytrim serve``'s server against the remote backend on
loopback, frames checked byte by byte against hand-built msgpack, the server fuzzed with malformed
frames (it answers each with an error frame and keeps serving), the API key, and the mappings."""
import os
import random
import threading
import time

import msgpack
import numpy as np
import pytest

from policytrim_ros.config import ConfigError
from policytrim_ros.policy import wire
from policytrim_ros.policy.base import InferenceTimeoutError, Observation, PolicyMetadata
from policytrim_ros.policy.remote import (PolicyServerError, PolicyServerLost, RemoteConfig, RemotePolicy,
                                          build_request, chunk_from_reply, resolve_mapping)
from policytrim_ros.policy.server import PolicyServer
from policytrim_ros.robots.arm import JOINT_NAMES

H, SIZE = 4, (8, 6)   # chunk size; (height, width) of each of the two cameras


class EchoPolicy:
    """Row k of its chunk: the joint positions + 0.01 k + the image's mean / 1000 (a checkable function)."""

    metadata = PolicyMetadata('echo', H, JOINT_NAMES, (SIZE[0], 2 * SIZE[1]), cameras=('left', 'right'))
    delay_s = 0.0

    def reset(self):
        pass

    def predict_action_chunk(self, observation):
        time.sleep(self.delay_s)
        if observation.instruction == 'crash':
            raise RuntimeError('the model fell over')
        return (observation.joint_positions + 0.01 * np.arange(H)[:, None] + observation.image.mean() / 1000)


def observation(seed=0, instruction='reach the red target'):
    rng = np.random.default_rng(seed)
    return Observation(image=rng.integers(0, 256, (SIZE[0], 2 * SIZE[1], 3), dtype=np.uint8),
                       joint_positions=rng.normal(0, 0.3, 7), joint_velocities=np.zeros(7),
                       environment_state=np.zeros(0), instruction=instruction, time=0.0, step=0)


@pytest.fixture
def serve():
    """``serve(policy, **kwargs)`` -> a PolicyServer on a free loopback port, serving in a thread."""
    servers = []

    def start(policy=None, **kwargs):
        server = PolicyServer(policy or EchoPolicy(), port=0, log=lambda line: None, **kwargs)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


def client(server, **kwargs):
    return RemotePolicy(RemoteConfig(uri=f'ws://127.0.0.1:{server.port}', **kwargs), H, 0.1, JOINT_NAMES)


def test_numpy_arrays_travel_in_openpis_byte_layout():
    frame = wire.packb({'a': np.array([1.5], dtype='<f4')})
    expected = (b'\x81' + b'\xa1a'                               # {'a': map of 4
                + b'\x84' + b'\xc4\x0b__ndarray__' + b'\xc3'     # b'__ndarray__': True
                + b'\xc4\x04data' + b'\xc4\x04' + np.float32(1.5).tobytes()
                + b'\xc4\x05dtype' + b'\xa3<f4'                  # dtype.str, a str
                + b'\xc4\x05shape' + b'\x91\x01')                # shape (1,), an array
    assert frame == expected
    # a float32 scalar (a float64 one is a Python float: msgpack packs it as one, as openpi's does)
    assert wire.packb(np.float32(2.0)) == (b'\x83\xc4\x0d__npgeneric__\xc3\xc4\x04data\xcb' + b'\x40' + b'\x00' * 7
                                           + b'\xc4\x05dtype\xa3<f4')
    assert wire.unpackb(wire.packb(np.float32(2.0))) == np.float32(2.0)
    decoded = wire.unpackb(expected)['a']
    assert decoded.dtype == np.float32 and decoded.tolist() == [1.5]


def test_client_and_server_frames_are_openpis(serve):
    """What the remote backend sends and what the server answers, built by hand with plain msgpack."""
    server = serve()
    policy, obs = client(server), observation()
    request = build_request(obs, policy.mapping, 'pad', 'prompt')
    arrays = lambda a: {b'__ndarray__': True, b'data': a.tobytes(), b'dtype': a.dtype.str, b'shape': list(a.shape)}  # noqa: E731
    by_hand = msgpack.packb({'observation/image_0': arrays(np.ascontiguousarray(obs.image[:, :SIZE[1]])),
                             'observation/image_1': arrays(np.ascontiguousarray(obs.image[:, SIZE[1]:])),
                             'observation/state': arrays(obs.joint_positions), 'prompt': obs.instruction})
    assert wire.packb(request) == by_hand

    from websockets.sync.client import connect
    with connect(f'ws://127.0.0.1:{server.port}', compression=None, proxy=None) as ws:
        metadata = msgpack.unpackb(ws.recv())
        assert metadata['policytrim']['chunk_size'] == H and metadata['policytrim']['cameras'] == ['left', 'right']
        ws.send(by_hand)
        reply = msgpack.unpackb(ws.recv())   # plain msgpack: arrays arrive as openpi's maps
    actions = reply['actions']
    assert set(actions) == {b'__ndarray__', b'data', b'dtype', b'shape'}
    assert (actions[b'dtype'], actions[b'shape']) == ('<f8', [H, 7])
    np.testing.assert_array_equal(np.frombuffer(actions[b'data'], '<f8').reshape(H, 7),
                                  EchoPolicy().predict_action_chunk(obs))
    assert reply['server_timing']['infer_ms'] >= 0 and reply['policy_timing']['infer_ms'] >= 0
    policy.close()


def test_remote_chunks_equal_the_served_policys_exactly(serve, tiny_checkpoint):
    from policytrim_ros.policy.torch_policy import TorchVLAPolicy
    local = TorchVLAPolicy(tiny_checkpoint)
    server = serve(TorchVLAPolicy(tiny_checkpoint))
    remote = RemotePolicy(RemoteConfig(uri=f'ws://127.0.0.1:{server.port}'), 16, 0.1, JOINT_NAMES)
    assert remote.metadata.image_size == local.metadata.image_size
    assert remote.metadata.cameras == local.metadata.cameras
    for seed in range(3):
        rng = np.random.default_rng(seed)
        obs = Observation(image=rng.integers(0, 256, (*local.metadata.image_size, 3), dtype=np.uint8),
                          joint_positions=rng.normal(0, 0.3, 7), joint_velocities=np.zeros(7),
                          environment_state=np.zeros(0), instruction='push the cube to the green target',
                          time=0.0, step=0)
        np.testing.assert_array_equal(remote.predict_action_chunk(obs), local.predict_action_chunk(obs))
    remote.close()


def test_the_server_refuses_connections_without_its_api_key(serve, monkeypatch):
    server = serve(api_key='s3cret')
    monkeypatch.delenv('POLICYTRIM_API_KEY', raising=False)
    with pytest.raises(ConfigError, match='refused the connection: HTTP 401'):
        client(server)
    monkeypatch.setenv('POLICYTRIM_API_KEY', 'wrong')
    with pytest.raises(ConfigError, match='HTTP 401'):
        client(server)
    monkeypatch.setenv('POLICYTRIM_API_KEY', 's3cret')
    policy = client(server)
    assert policy.predict_action_chunk(observation()).shape == (H, 7)
    policy.close()
    import urllib.request
    with urllib.request.urlopen(f'http://127.0.0.1:{server.port}/healthz', timeout=5) as health:   # no key needed
        assert health.status == 200


def fuzz_frames(rng: random.Random):
    """Malformed and wrong-shaped observations, each a (name, frame) pair."""
    good = build_request(observation(), resolve_mapping(RemoteConfig(), JOINT_NAMES,
                                                        {'cameras': ['l', 'r'], 'camera_size': list(SIZE)}),
                         'pad', 'prompt')
    good_frame = wire.packb(good)
    array = lambda data, dtype, shape: {b'__ndarray__': True, b'data': data, b'dtype': dtype, b'shape': shape}  # noqa: E731
    openpi = lambda obj: msgpack.packb(obj, default=lambda a: array(a.tobytes(), a.dtype.str, a.shape))  # noqa: E731
    yield 'text frame', 'hello'
    yield 'random bytes', bytes(rng.getrandbits(8) for _ in range(200))
    yield 'truncated', good_frame[:len(good_frame) // 2]
    yield 'trailing data', good_frame + b'\x00'
    yield 'not a map', msgpack.packb([1, 2, 3])
    yield 'int keys', msgpack.packb({1: 2})
    yield 'ext type', msgpack.packb({'x': msgpack.ExtType(42, b'pickle?')})
    yield 'deep nesting', b'\x91' * 60_000
    yield 'missing state', wire.packb({k: v for k, v in good.items() if k != 'observation/state'})
    yield 'object dtype', openpi({**good, 'observation/state': array(b'\x00' * 56, '|O', [7])})
    yield 'void dtype', openpi({**good, 'observation/state': array(b'\x00' * 56, '|V8', [7])})
    yield 'bad dtype string', openpi({**good, 'observation/state': array(b'\x00' * 56, 'no-such', [7])})
    yield 'size mismatch', openpi({**good, 'observation/state': array(b'\x00' * 8, '<f8', [7])})
    yield 'negative shape', openpi({**good, 'observation/state': array(b'', '<f8', [-1])})
    yield 'huge shape', openpi({**good, 'observation/state': array(b'', '<f8', [2 ** 40, 2 ** 40])})
    yield 'wrong state length', wire.packb({**good, 'observation/state': np.zeros(6)})
    yield 'nan state', wire.packb({**good, 'observation/state': np.full(7, np.nan)})
    yield 'float image', wire.packb({**good, 'observation/image_0': np.zeros((*SIZE, 3), np.float32)})
    yield 'wrong image size', wire.packb({**good, 'observation/image_1': np.zeros((9, 9, 3), np.uint8)})
    yield 'prompt not a string', wire.packb({**good, 'prompt': 7})
    yield 'scalar for an array', wire.packb({**good, 'observation/state': np.float64(1.0)})
    yield 'model raises', wire.packb({**good, 'prompt': 'crash'})
    for k in range(6):   # random bit flips in a good frame
        flipped = bytearray(good_frame)
        for _ in range(4):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        yield f'bit flips {k}', bytes(flipped)


def test_the_server_answers_every_malformed_frame_with_an_error_and_keeps_serving(serve):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect
    server = serve(max_frame_bytes=64 * 1024)
    uri = f'ws://127.0.0.1:{server.port}'
    answered = {}
    for name, frame in fuzz_frames(random.Random(0)):
        with connect(uri, compression=None, proxy=None, max_size=None) as ws:
            ws.recv()                                  # metadata
            ws.send(frame)
            reply = ws.recv(timeout=10)
            answered[name] = reply
            if isinstance(reply, str):                 # an error frame, then the server closes (1011)
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=10)
                assert closed.value.rcvd.code == 1011
    errors = {name for name, reply in answered.items() if isinstance(reply, str)}
    flips = {name for name in answered if name.startswith('bit flips')}
    assert set(answered) - flips <= errors, sorted(set(answered) - errors)   # every crafted one is refused
    assert 'model fell over' in answered['model raises'] and 'dtype' in answered['object dtype']
    assert "'observation/state' must be (7,)" in answered['wrong state length']
    with connect(uri, compression=None, proxy=None, max_size=None) as ws:   # a frame above max_frame_bytes
        ws.recv()
        ws.send(b'\x00' * (65 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1009   # message too big
    policy = client(server)                         # still serving, with the right answer
    obs = observation()
    np.testing.assert_array_equal(policy.predict_action_chunk(obs), EchoPolicy().predict_action_chunk(obs))
    policy.close()


def test_server_errors_timeouts_and_a_lost_server_raise_their_end_reasons(serve):
    server = serve()
    policy = client(server, timeout_s=0.5)
    with pytest.raises(PolicyServerError, match='model fell over') as error:
        policy.predict_action_chunk(observation(instruction='crash'))
    assert error.value.end_reason == 'server_error'
    assert policy.predict_action_chunk(observation()).shape == (H, 7)   # the next call reconnects
    server.policy.delay_s = 2.0
    with pytest.raises(InferenceTimeoutError) as timeout:
        policy.predict_action_chunk(observation())
    assert timeout.value.end_reason == 'inference_timeout'
    server.policy.delay_s = 0.0
    server.shutdown()
    with pytest.raises(PolicyServerLost) as lost:
        policy.predict_action_chunk(observation())
    assert lost.value.end_reason == 'server_lost'


def test_the_droid_preset_maps_images_state_and_velocity_actions():
    config = RemoteConfig(layout='droid', camera_size=(8, 6))
    mapping = resolve_mapping(config, JOINT_NAMES)
    obs = observation()
    obs = Observation(**{**obs.__dict__, 'joint_positions': np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.01])})
    request = build_request(obs, mapping, 'pad', 'prompt')
    assert sorted(request) == ['observation/exterior_image_1_left', 'observation/gripper_position',
                               'observation/joint_position', 'observation/wrist_image_left', 'prompt']
    assert request['observation/wrist_image_left'].shape == (224, 224, 3)
    # 8 x 6 padded into 224 x 224: 168 columns of picture, 28 black on each side
    assert not request['observation/wrist_image_left'][:, :28].any()
    np.testing.assert_allclose(request['observation/joint_position'], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0])
    np.testing.assert_allclose(request['observation/gripper_position'], [0.75])   # (0.01 - 0.04) / -0.04
    velocities = np.zeros((H + 2, 8))
    velocities[:, 0] = 1.0          # joint1 at 1 rad/s
    velocities[:, 7] = 1.0          # gripper closed
    chunk = chunk_from_reply({'actions': velocities}, mapping, 'actions', H, obs.joint_positions, 0.1)
    np.testing.assert_allclose(chunk[:, 0], [0.2, 0.3, 0.4, 0.5])    # 0.1 + 0.1 s x 1 rad/s per step
    np.testing.assert_allclose(chunk[:, 1], [0.2] * H)
    np.testing.assert_allclose(chunk[:, 6], [0.0] * H)               # 0.04 - 0.04 x 1
    with pytest.raises(PolicyServerError, match=r'needs at least \(4, 8\)'):
        chunk_from_reply({'actions': velocities[:, :7]}, mapping, 'actions', H, obs.joint_positions, 0.1)


@pytest.mark.parametrize('layout, keys, state', [
    ('libero', ['observation/image', 'observation/state', 'observation/wrist_image', 'prompt'], {'observation/state': 8}),
    ('aloha', ['images', 'prompt', 'state'], {'state': 14}),
])
def test_the_libero_and_aloha_presets_send_openpis_keys_and_shapes(layout, keys, state):
    mapping = resolve_mapping(RemoteConfig(layout=layout, camera_size=(8, 6), image_keys=() if layout == 'libero'
                                           else ('images.cam_high', 'images.cam_left_wrist')), JOINT_NAMES)
    request = build_request(observation(), mapping, 'stretch', 'prompt')
    assert sorted(request) == keys
    assert {k: request[k].shape[0] for k in state} == state
    if layout == 'aloha':
        assert request['images']['cam_high'].shape == (3, 224, 224)   # CHW


def test_mapping_mistakes_name_the_field():
    with pytest.raises(ConfigError, match=r'action_columns has 3 entries for the 7 joints'):
        resolve_mapping(RemoteConfig(layout='aloha', action_columns=(0, 1, 2)), JOINT_NAMES)
    with pytest.raises(ConfigError, match=r"gripper_joint 'grip' is not one of the joints .*did you mean 'gripper'"):
        resolve_mapping(RemoteConfig(layout='droid', gripper_joint='grip'), JOINT_NAMES)
    with pytest.raises(ValueError, match="layout 'dorid' must be one of .*did you mean 'droid'"):
        RemoteConfig(layout='dorid')
    with pytest.raises(ConfigError, match='cannot connect'):
        RemotePolicy(RemoteConfig(uri='ws://127.0.0.1:9', connect_timeout_s=2), H, 0.1, JOINT_NAMES)


def test_an_api_key_never_comes_from_a_parameter():
    assert 'api_key' not in RemoteConfig.__dataclass_fields__     # only the name of its environment variable
    assert RemoteConfig(api_key_env='NO_SUCH_VARIABLE_HERE').api_key == '' and 'NO_SUCH_VARIABLE_HERE' not in os.environ
