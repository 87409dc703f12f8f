"""The remote backend: chunks from a policy server that speaks openpi's websocket protocol.

A user's big VLA (π0 / π0.5 under openpi's ``serve_policy.py``, or our checkpoints under
``policytrim serve``) runs on a GPU box; the robot PC sends each observation and gets the chunk
back. The observation mapping (``RemoteConfig``) says which server key each camera, each joint's
position and the instruction go to, at which image size and layout; the action mapping says which
reply column drives each joint and how (absolute targets, deltas from the observed positions, or
velocities), with the gripper scaled into the server's units. Presets (``layout``) fill it for
openpi's DROID, LIBERO and ALOHA examples and for ``policytrim serve``.

Nothing falls back: a server that cannot be reached, closes, times out, or answers with an error
frame or a reply of the wrong shape raises an ``InferenceError`` whose ``end_reason`` ends the
episode (policy_node then holds the arm). A failed connection is dropped and the next call
reconnects; a call never reconnects mid-request.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass

import numpy as np

from policytrim_ros import constants as C
from policytrim_ros.config import ConfigError, suggest
from policytrim_ros.policy import wire
from policytrim_ros.policy.base import (InferenceError, InferenceTimeoutError, Observation, PolicyInputError,
                                        PolicyMetadata)

LAYOUTS = ('policytrim', 'droid', 'libero', 'aloha')
IMAGE_FORMATS = ('hwc', 'chw')
RESIZE_MODES = ('pad', 'stretch')
ACTION_MODES = ('absolute', 'delta', 'velocity')
POLICYTRIM_IMAGE_KEY = 'observation/image_{}'
"""``policytrim serve``'s key of camera i's (h, w, 3) uint8 image (its checkpoint's tile order)."""
POLICYTRIM_STATE_KEY = 'observation/state'
"""``policytrim serve``'s key of the (A,) joint positions, in the checkpoint's joint order."""
PROMPT_KEY = 'prompt'
METADATA_SECTION = 'policytrim'
"""The server metadata entry ``policytrim serve`` describes its checkpoint in (openpi clients ignore it)."""


class PolicyServerError(InferenceError):
    """The server answered with an error frame, or with a reply this mapping cannot use."""

    end_reason = C.END_SERVER_ERROR


class PolicyServerLost(InferenceError):
    """The server could not be reached, refused the connection, or closed it."""

    end_reason = C.END_SERVER_LOST


@dataclass(frozen=True)
class RemoteConfig:
    """The policy server and how observations and actions map onto its keys and columns.

    Fields left empty ('' or []) take the ``layout`` preset's value (docs/policy-server.md lists them).
    uri: ws://host:port (or wss://) of the server.
    api_key_env: environment variable holding the API key sent as 'Authorization: Api-Key <key>'
        (unset or empty = send none). The key is never a parameter: parameters are readable by
        anyone on the ROS graph.
    layout: preset of the mapping: policytrim (policytrim serve: sizes, cameras and H from its
        metadata), droid, libero or aloha (openpi's examples).
    connect_timeout_s: seconds to open the connection and read the server's metadata.
    timeout_s: seconds to wait for each reply; longer ends the episode with inference_timeout.
    max_reply_mb: largest reply frame accepted (MiB).
    image_keys: the server key of each camera's image, in tile order (one camera per key); a dot
        nests ('images.cam_high' is obs['images']['cam_high']).
    image_size: [height, width] of each image the server takes; camera images are resized to it.
    image_format: hwc ((h, w, 3)) or chw ((3, h, w)), uint8 RGB.
    resize: pad (keep the aspect ratio, pad with black, as openpi's resize_with_pad) or stretch.
    camera_size: [height, width] of each camera image the robot publishes ([] = image_size).
    cameras: the Image frame_id of each camera, in tile order ([] = any).
    state_keys: the server key each joint's position goes to, in robot.joint_names order ('-' = not
        sent); joints sharing a key are concatenated in joint order.
    state_sizes: length of each state key's vector, in order of first appearance, zero-padded
        (0 = no padding).
    prompt_key: the server key of the instruction.
    actions_key: the reply key of the (N, D) action array; N >= chunk_size (the first H rows run).
    action_columns: the reply column of each joint, in robot.joint_names order.
    action_mode: absolute (joint targets), delta (targets = positions at the observation + value)
        or velocity (targets = positions + control_dt x running sum); the gripper is always absolute.
    gripper_joint: the joint whose value is scaled ('-' = none): target = gripper_offset +
        gripper_scale x value, and its state is sent as (position - offset) / scale.
    gripper_scale, gripper_offset: that mapping (m per server unit; m); scale 0 = the layout's pair.
    """

    uri: str = f'ws://127.0.0.1:{wire.DEFAULT_PORT}'
    api_key_env: str = 'POLICYTRIM_API_KEY'
    layout: str = 'policytrim'
    connect_timeout_s: float = 10.0
    timeout_s: float = 10.0
    max_reply_mb: float = 16.0
    image_keys: tuple[str, ...] = ()
    image_size: tuple[int, ...] = ()
    image_format: str = ''
    resize: str = 'pad'
    camera_size: tuple[int, ...] = ()
    cameras: tuple[str, ...] = ()
    state_keys: tuple[str, ...] = ()
    state_sizes: tuple[int, ...] = ()
    prompt_key: str = PROMPT_KEY
    actions_key: str = 'actions'
    action_columns: tuple[int, ...] = ()
    action_mode: str = ''
    gripper_joint: str = ''
    gripper_scale: float = 0.0
    gripper_offset: float = 0.0

    def __post_init__(self):
        if not self.uri.startswith(('ws://', 'wss://')) or len(self.uri) <= len('wss://'):
            raise ValueError(f"uri '{self.uri}' must start with ws:// or wss:// and name a host")
        for name, choices in (('layout', LAYOUTS), ('resize', RESIZE_MODES)):
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"{name} '{value}' must be one of {list(choices)}{suggest(value, choices)}")
        for name, choices in (('image_format', IMAGE_FORMATS), ('action_mode', ACTION_MODES)):
            value = getattr(self, name)
            if value and value not in choices:
                raise ValueError(f"{name} '{value}' must be one of {list(choices)} ('' = the layout's)"
                                 f'{suggest(value, choices)}')
        for name in ('connect_timeout_s', 'timeout_s', 'max_reply_mb'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f'{name} ({value}) must be > 0')
        for name in ('image_size', 'camera_size'):
            value = getattr(self, name)
            if value and (len(value) != 2 or min(value) < 1):
                raise ValueError(f'{name} {list(value)} must be [height, width] in pixels, both >= 1 ([] = default)')
        if any(not k for k in self.image_keys + self.state_keys) or not self.prompt_key or not self.actions_key:
            raise ValueError('image_keys, state_keys, prompt_key and actions_key must not hold empty names '
                             "(write '-' for a joint whose position is not sent)")
        if any(n < 0 for n in self.state_sizes) or any(c < 0 for c in self.action_columns):
            raise ValueError(f'state_sizes {list(self.state_sizes)} and action_columns {list(self.action_columns)} '
                             'must be >= 0')
        if not math.isfinite(self.gripper_scale) or not math.isfinite(self.gripper_offset):
            raise ValueError(f'gripper_scale ({self.gripper_scale}) and gripper_offset ({self.gripper_offset}) '
                             'must be finite')

    @property
    def api_key(self) -> str:
        return os.environ.get(self.api_key_env, '') if self.api_key_env else ''


@dataclass(frozen=True)
class Mapping:
    """A ``RemoteConfig`` resolved against its preset and the robot's joints (see its fields)."""

    image_keys: tuple[str, ...]
    image_size: tuple[int, int]
    image_format: str
    camera_size: tuple[int, int]
    state_keys: tuple[str, ...]
    state_sizes: dict[str, int]
    action_columns: tuple[int, ...]
    action_mode: str
    gripper: int | None          # index of the gripper joint, or None
    gripper_scale: float
    gripper_offset: float


def _preset(layout: str, joints: tuple[str, ...]) -> dict:
    """The preset values of ``layout`` for a robot with ``joints`` (the gripper: 'gripper' if named,
    else the last joint). openpi's example robots have 7 (DROID: Franka), 6 + 1 (LIBERO) or 2 x 7
    (ALOHA) dimensions; a robot with fewer joints fills the first columns and pads the state."""
    n = len(joints)
    gripper = joints.index('gripper') if 'gripper' in joints else n - 1
    arm = [i for i in range(n) if i != gripper]
    if layout == 'droid':   # joint velocities (7) + gripper position (0 open .. 1 closed)
        columns = [0] * n
        for k, i in enumerate(arm):
            columns[i] = k
        columns[gripper] = 7
        return dict(image_keys=('observation/exterior_image_1_left', 'observation/wrist_image_left'),
                    image_size=(224, 224), image_format='hwc',
                    state_keys=tuple('observation/gripper_position' if i == gripper else 'observation/joint_position'
                                     for i in range(n)),
                    state_sizes=(7, 1) if gripper == n - 1 else (1, 7), action_columns=tuple(columns),
                    action_mode='velocity', gripper=joints[gripper], gripper_scale=-0.04, gripper_offset=0.04)
    if layout == 'libero':  # 8-d state, end-effector deltas (6) + gripper (-1 open .. 1 closed)
        columns = [0] * n
        for k, i in enumerate(arm):
            columns[i] = k
        columns[gripper] = 6
        return dict(image_keys=('observation/image', 'observation/wrist_image'), image_size=(224, 224),
                    image_format='hwc', state_keys=('observation/state',) * n, state_sizes=(8,),
                    action_columns=tuple(columns), action_mode='delta', gripper=joints[gripper],
                    gripper_scale=-0.02, gripper_offset=0.02)
    if layout == 'aloha':   # 14-d state and absolute actions (left arm first), CHW images
        return dict(image_keys=('images.cam_high', 'images.cam_left_wrist', 'images.cam_right_wrist'),
                    image_size=(224, 224), image_format='chw', state_keys=('state',) * n, state_sizes=(14,),
                    action_columns=tuple(range(n)), action_mode='absolute', gripper=joints[gripper],
                    gripper_scale=0.04, gripper_offset=0.0)
    # policytrim serve: its checkpoint's cameras, sizes and joints, absolute targets
    return dict(image_keys=(), image_size=(), image_format='hwc', state_keys=(POLICYTRIM_STATE_KEY,) * n,
                state_sizes=(), action_columns=tuple(range(n)), action_mode='absolute', gripper='-',
                gripper_scale=1.0, gripper_offset=0.0)


def resolve_mapping(config: RemoteConfig, joints: tuple[str, ...], server: dict | None = None) -> Mapping:
    """The preset of ``config.layout`` overridden by every field ``config`` sets, checked against the
    robot's ``joints`` (ConfigError naming the field). ``server`` is the policytrim section of a
    ``policytrim serve`` metadata (layout policytrim): its cameras and image size."""
    p = _preset(config.layout, joints)
    if config.layout == 'policytrim' and server is not None:
        p['image_keys'] = tuple(POLICYTRIM_IMAGE_KEY.format(i) for i in range(len(server['cameras']) or 1))
        p['image_size'] = tuple(server['camera_size'])
    pick = lambda name: getattr(config, name) or p[name]   # noqa: E731
    image_keys, state_keys = pick('image_keys'), pick('state_keys')
    image_size = tuple(pick('image_size'))
    camera_size = tuple(config.camera_size) or image_size
    gripper_joint = config.gripper_joint or p['gripper']
    where = 'policy.remote'
    if not image_size:
        raise ConfigError(f'{where}.image_size must be [height, width] for the {config.layout} layout')
    if config.cameras and len(config.cameras) != len(image_keys):
        raise ConfigError(f'{where}.cameras names {len(config.cameras)} cameras but image_keys has '
                          f'{len(image_keys)} keys {list(image_keys)}: one key per camera')
    if len(state_keys) != len(joints):
        raise ConfigError(f'{where}.state_keys has {len(state_keys)} entries for the {len(joints)} joints '
                          f'{list(joints)}: one server key per joint, in that order')
    sent = [k for k in dict.fromkeys(state_keys) if k != '-']
    sizes = pick('state_sizes')
    if sizes and len(sizes) != len(sent):
        raise ConfigError(f'{where}.state_sizes {list(sizes)} must give one length per state key {sent}')
    state_sizes = dict(zip(sent, sizes)) if sizes else {k: 0 for k in sent}
    for key in sent:
        count = state_keys.count(key)
        if state_sizes[key] and state_sizes[key] < count:
            raise ConfigError(f"{where}.state_sizes gives '{key}' {state_sizes[key]} values but {count} joints go there")
    columns = pick('action_columns')
    if len(columns) != len(joints):
        raise ConfigError(f'{where}.action_columns has {len(columns)} entries for the {len(joints)} joints '
                          f'{list(joints)}: one reply column per joint, in that order')
    gripper = None
    if gripper_joint != '-':
        if gripper_joint not in joints:
            raise ConfigError(f"{where}.gripper_joint '{gripper_joint}' is not one of the joints {list(joints)}"
                              f"{suggest(gripper_joint, joints)} ('-' = none)")
        gripper = joints.index(gripper_joint)
    scale = config.gripper_scale or p['gripper_scale']
    return Mapping(image_keys=tuple(image_keys), image_size=(int(image_size[0]), int(image_size[1])),
                   image_format=config.image_format or p['image_format'],
                   camera_size=(int(camera_size[0]), int(camera_size[1])), state_keys=tuple(state_keys),
                   state_sizes=state_sizes, action_columns=tuple(columns),
                   action_mode=config.action_mode or p['action_mode'], gripper=gripper, gripper_scale=scale,
                   gripper_offset=config.gripper_offset if config.gripper_scale else p['gripper_offset'])


def resize_image(image: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """(h, w, 3) uint8 -> (size[0], size[1], 3): unchanged if already that size; ``pad`` keeps the
    aspect ratio and centres it on black (openpi's resize_with_pad), ``stretch`` does not."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    import cv2  # only needed when resizing
    if mode == 'stretch':
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    ratio = min(height / image.shape[0], width / image.shape[1])
    h, w = max(1, round(image.shape[0] * ratio)), max(1, round(image.shape[1] * ratio))
    scaled = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR)
    out = np.zeros((height, width, 3), np.uint8)
    top, left = (height - h) // 2, (width - w) // 2
    out[top:top + h, left:left + w] = scaled
    return out


def _put(request: dict, key: str, value) -> None:
    node = request
    *parents, leaf = key.split('.')
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def build_request(observation: Observation, mapping: Mapping, resize: str, prompt_key: str) -> dict:
    """The observation dict sent to the server (PolicyInputError if the image or state is unusable)."""
    n = len(mapping.image_keys)
    ch, cw = mapping.camera_size
    image = np.asarray(observation.image)
    if image.shape != (ch, cw * n, 3) or image.dtype != np.uint8:
        raise PolicyInputError(f'image is {image.shape} {image.dtype}; the remote policy needs ({ch}, {cw * n}, 3) '
                               f'uint8: {n} camera(s) of {cw}x{ch}, tiled')
    positions = np.asarray(observation.joint_positions, dtype=np.float64)
    if positions.shape != (len(mapping.state_keys),) or not np.isfinite(positions).all():
        raise PolicyInputError(f'joint_positions {positions.tolist()} must be {len(mapping.state_keys)} finite values')
    request: dict = {}
    for i, key in enumerate(mapping.image_keys):
        tile = resize_image(image[:, i * cw:(i + 1) * cw], mapping.image_size, resize)
        _put(request, key, np.ascontiguousarray(tile.transpose(2, 0, 1) if mapping.image_format == 'chw' else tile))
    state = positions.copy()
    if mapping.gripper is not None:
        state[mapping.gripper] = (state[mapping.gripper] - mapping.gripper_offset) / mapping.gripper_scale
    for key, size in mapping.state_sizes.items():
        values = state[[i for i, k in enumerate(mapping.state_keys) if k == key]]
        _put(request, key, np.concatenate([values, np.zeros(max(0, size - len(values)))]))
    _put(request, prompt_key, observation.instruction)
    return request


def chunk_from_reply(reply, mapping: Mapping, actions_key: str, chunk_size: int, positions: np.ndarray,
                     control_dt: float) -> np.ndarray:
    """(H, A) absolute joint targets from a server reply (PolicyServerError if it has no usable actions)."""
    actions = reply.get(actions_key) if isinstance(reply, dict) else None
    if not isinstance(actions, np.ndarray) or actions.ndim != 2 or actions.dtype.kind not in 'iuf':
        shape = getattr(actions, 'shape', None)
        raise PolicyServerError(f"the reply has no numeric (N, D) array '{actions_key}' (got "
                                f"{type(actions).__name__}{'' if shape is None else f' {shape}'}; keys "
                                f"{sorted(reply) if isinstance(reply, dict) else '-'})")
    need = max(mapping.action_columns) + 1
    if actions.shape[0] < chunk_size or actions.shape[1] < need:
        raise PolicyServerError(f"the reply's '{actions_key}' is {actions.shape}; this robot needs at least "
                                f'({chunk_size}, {need}): chunk_size rows and columns {list(mapping.action_columns)}')
    values = actions[:chunk_size, list(mapping.action_columns)].astype(np.float64)
    if mapping.action_mode == 'delta':
        chunk = positions + values
    elif mapping.action_mode == 'velocity':
        chunk = positions + control_dt * np.cumsum(values, axis=0)
    else:
        chunk = values.copy()
    if mapping.gripper is not None:
        chunk[:, mapping.gripper] = mapping.gripper_offset + mapping.gripper_scale * values[:, mapping.gripper]
    return chunk


class RemotePolicy:
    """``ChunkPolicy`` that asks a policy server (openpi's websocket protocol) for each chunk.

    Connects (and reads the server's metadata) at construction, so a wrong uri, a refused API key
    or a mapping that does not fit a ``policytrim serve`` checkpoint stops start-up with a
    ConfigError. chunk_size: H the robot runs; control_dt: seconds per action (velocity mode);
    joint_names: the robot's joints, the chunk's columns.
    """

    def __init__(self, config: RemoteConfig, chunk_size: int, control_dt: float, joint_names: tuple[str, ...]):
        self.config, self.chunk_size, self.control_dt = config, chunk_size, control_dt
        self.joint_names = tuple(joint_names)
        self._ws = None
        self._lock = threading.Lock()
        try:
            self.server_metadata = self._connect()
        except InferenceError as err:
            raise ConfigError(f'policy.remote.uri {config.uri}: {err}') from None
        section = self.server_metadata.get(METADATA_SECTION) if isinstance(self.server_metadata, dict) else None
        if config.layout == 'policytrim':
            section = self._check_policytrim_server(section)
        self.mapping = resolve_mapping(config, self.joint_names, section)
        ch, cw = self.mapping.camera_size
        n = len(self.mapping.image_keys)
        self.metadata = PolicyMetadata(name='remote', chunk_size=chunk_size, joint_names=self.joint_names,
                                       image_size=(ch, cw * n) if n else None,
                                       cameras=tuple(config.cameras) or tuple((section or {}).get('cameras', ())),
                                       horizons=tuple((section or {}).get('horizons', ())))
        self.last_server_timing: dict = {}

    def _check_policytrim_server(self, section) -> dict:
        """The policytrim section of the server's metadata, checked against this robot (ConfigError)."""
        where = f'policy.remote.uri {self.config.uri}'
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: the server's metadata has no '{METADATA_SECTION}' section, so it is not "
                              'policytrim serve; set policy.remote.layout to its layout (droid, libero, aloha) '
                              'and the mapping fields')
        if tuple(section.get('joint_names', ())) != self.joint_names:
            raise ConfigError(f"{where}: the served checkpoint commands joints {section.get('joint_names')} but the "
                              f'robot has {list(self.joint_names)}')
        if section.get('chunk_size') != self.chunk_size:
            raise ConfigError(f"{where}: chunk_size ({self.chunk_size}) must equal the served checkpoint's H "
                              f"({section.get('chunk_size')})")
        return section

    # -- the protocol --------------------------------------------------------------------------
    def _connect(self):
        """Open the connection and return the server's metadata (PolicyServerLost if that fails)."""
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect
        key = self.config.api_key
        try:
            ws = connect(self.config.uri, compression=None, proxy=None, open_timeout=self.config.connect_timeout_s,
                         max_size=int(self.config.max_reply_mb * 2 ** 20),
                         additional_headers=wire.api_key_header(key) if key else None)
        except InvalidStatus as err:
            status = err.response.status_code
            hint = (f' (is ${self.config.api_key_env} the key the server was started with?)'
                    if status in (401, 403) else '')
            raise PolicyServerLost(f'the server refused the connection: HTTP {status}{hint}') from None
        except (OSError, TimeoutError, WebSocketException) as err:
            raise PolicyServerLost(f'cannot connect: {err or type(err).__name__} (is the policy server '
                                   'running there?)') from None
        try:
            metadata = wire.unpackb(ws.recv(timeout=self.config.connect_timeout_s))
        except (TimeoutError, WebSocketException, wire.FrameError) as err:
            ws.close()
            raise PolicyServerLost(f'no metadata from the server: {err or type(err).__name__}') from None
        self._ws = ws
        return metadata

    def _request(self, request: dict):
        """Send one observation and return the decoded reply; any failure drops the connection."""
        from websockets.exceptions import ConnectionClosed, WebSocketException
        if self._ws is None:
            self._connect()
        ws = self._ws
        try:
            ws.send(wire.packb(request))
            reply = ws.recv(timeout=self.config.timeout_s)
        except TimeoutError:
            self.close()
            raise InferenceTimeoutError(f'no reply from {self.config.uri} within policy.remote.timeout_s '
                                        f'({self.config.timeout_s}s)') from None
        except ConnectionClosed as err:
            self.close()
            raise PolicyServerLost(f'{self.config.uri} closed the connection: {err}') from None
        except (OSError, WebSocketException) as err:
            self.close()
            raise PolicyServerLost(f'{self.config.uri}: {err}') from None
        if isinstance(reply, str):   # openpi: a text frame is the server's error, then it closes
            self.close()
            raise PolicyServerError(f'the server at {self.config.uri} reported: {reply.strip()[-2000:]}')
        try:
            return wire.unpackb(reply)
        except wire.FrameError as err:
            self.close()
            raise PolicyServerError(f'unreadable reply from {self.config.uri}: {err}') from None

    def close(self) -> None:
        """Close the connection (the next call reconnects)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()

    # -- ChunkPolicy ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Nothing per episode: the protocol has no reset (a dropped connection reconnects on the next call)."""

    def predict_action_chunk(self, observation: Observation) -> np.ndarray:
        """(H, A) float64 absolute joint targets from the server's reply to ``observation``."""
        return self._call(observation)[0]

    def predict_chunk_and_horizon(self, observation: Observation) -> tuple[np.ndarray, int]:
        """((H, A) targets, h): the served efficiency head's pick (``metadata.horizons`` not empty)."""
        chunk, reply = self._call(observation)
        h = reply.get('n_action_steps')
        if h not in self.metadata.horizons:
            raise PolicyServerError(f"the reply's n_action_steps {h!r} is not one of the served head's horizons "
                                    f'{list(self.metadata.horizons)}')
        return chunk, int(h)

    def _call(self, observation: Observation) -> tuple[np.ndarray, dict]:
        request = build_request(observation, self.mapping, self.config.resize, self.config.prompt_key)
        with self._lock:
            reply = self._request(request)
        if isinstance(reply, dict) and isinstance(reply.get('server_timing'), dict):
            self.last_server_timing = reply['server_timing']
        positions = np.asarray(observation.joint_positions, dtype=np.float64)
        return chunk_from_reply(reply, self.mapping, self.config.actions_key, self.chunk_size, positions,
                                self.control_dt), reply
