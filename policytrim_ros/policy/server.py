"""``policytrim serve``: a policy backend served over openpi's websocket protocol (``policy.wire``).

A robot PC without torch runs our VLA from a GPU box through the remote backend (layout
``policytrim``), and any openpi client can call it. A server that moves robots lets in only who
belongs: it binds to loopback unless told otherwise, refuses the websocket handshake (HTTP 401)
without the API key when one is set, bounds every incoming frame (``max_frame_bytes``), never
unpickles, and answers a malformed or wrong-shaped observation, or a model that raised, with an
error text frame and a close (code 1011, as openpi's server does) while it keeps serving everyone
else. One model serves all connections, one call at a time.

Request (layout ``policytrim``): ``observation/image_<i>`` (h, w, 3) uint8 per camera of the
checkpoint, in its tile order; ``observation/state`` (A,) float joint positions; ``prompt`` str.
Reply: ``actions`` (H, A) float64 absolute joint targets, ``policy_timing`` / ``server_timing``
(``infer_ms``, ``prev_total_ms``) as openpi's, and ``n_action_steps`` when the checkpoint has an
efficiency head. The metadata frame holds the checkpoint's description under ``policytrim``.
"""
from __future__ import annotations

import hmac
import http
import sys
import threading
import time
import traceback

import numpy as np

from policytrim_ros.policy import wire
from policytrim_ros.policy.base import ChunkPolicy, Observation, PolicyInputError
from policytrim_ros.policy.remote import METADATA_SECTION, POLICYTRIM_IMAGE_KEY, POLICYTRIM_STATE_KEY, PROMPT_KEY

ERROR_CLOSE_CODE = 1011
"""Internal error: the close code openpi's server sends after an error frame."""


def server_metadata(policy: ChunkPolicy, name: str = '') -> dict:
    """The metadata frame: what the served policy consumes and produces."""
    meta = policy.metadata
    return {METADATA_SECTION: {
        'backend': meta.name, 'checkpoint': name, 'chunk_size': meta.chunk_size,
        'joint_names': list(meta.joint_names), 'cameras': list(meta.cameras),
        'camera_size': list(meta.camera_image_size), 'horizons': list(meta.horizons),
        'observation': {'images': [POLICYTRIM_IMAGE_KEY.format(i) for i in range(meta.num_cameras)],
                        'state': POLICYTRIM_STATE_KEY, 'prompt': PROMPT_KEY},
    }}


def observation_from_request(request, policy: ChunkPolicy) -> Observation:
    """The ``Observation`` of one decoded request (PolicyInputError naming the key that is wrong)."""
    meta = policy.metadata
    if not isinstance(request, dict):
        raise PolicyInputError(f'the observation must be a map of keys to values, got {type(request).__name__}')
    ch, cw = meta.camera_image_size
    tiles = []
    for i in range(meta.num_cameras):
        key = POLICYTRIM_IMAGE_KEY.format(i)
        image = request.get(key)
        if not isinstance(image, np.ndarray) or image.shape != (ch, cw, 3) or image.dtype != np.uint8:
            got = f'{image.shape} {image.dtype}' if isinstance(image, np.ndarray) else type(image).__name__
            raise PolicyInputError(f"'{key}' must be a ({ch}, {cw}, 3) uint8 RGB image, got {got}")
        tiles.append(image)
    state = request.get(POLICYTRIM_STATE_KEY)
    a = meta.action_dim
    if not isinstance(state, np.ndarray) or state.shape != (a,) or state.dtype.kind not in 'iuf':
        got = f'{state.shape} {state.dtype}' if isinstance(state, np.ndarray) else type(state).__name__
        raise PolicyInputError(f"'{POLICYTRIM_STATE_KEY}' must be ({a},) float joint positions "
                               f'{list(meta.joint_names)}, got {got}')
    if not np.isfinite(state).all():
        raise PolicyInputError(f"'{POLICYTRIM_STATE_KEY}' has NaN or inf: {state.tolist()}")
    prompt = request.get(PROMPT_KEY)
    if not isinstance(prompt, str):
        raise PolicyInputError(f"'{PROMPT_KEY}' must be the instruction string, got {type(prompt).__name__}")
    return Observation(image=np.concatenate(tiles, axis=1), joint_positions=state.astype(np.float64),
                       joint_velocities=np.zeros(a), environment_state=np.zeros(0), instruction=prompt,
                       time=0.0, step=0)


class PolicyServer:
    """Serves ``policy`` on ws://host:port (port 0 = any free port; ``port`` says which).

    api_key: required in 'Authorization: Api-Key <key>' when not empty. max_frame_bytes: largest
    request frame; a bigger one closes its connection (1009). log: where one line per event goes.
    """

    def __init__(self, policy: ChunkPolicy, host: str = '127.0.0.1', port: int = wire.DEFAULT_PORT,
                 api_key: str = '', max_frame_bytes: int = 4 * 2 ** 20, name: str = '', log=None):
        from websockets.sync.server import serve
        if policy.metadata.image_size is None or policy.metadata.uses_environment_state:
            raise ValueError(f'the {policy.metadata.name} policy cannot be served: it needs no image or reads '
                             'privileged simulator state (serve a torch or onnx checkpoint)')
        self.policy, self.api_key = policy, api_key
        self.metadata = server_metadata(policy, name)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._infer_lock = threading.Lock()
        self._connections: set = set()
        self._connections_lock = threading.Lock()
        self._server = serve(self._handle, host, port, compression=None, max_size=max_frame_bytes, max_queue=4,
                             process_request=self._process_request, server_header='policytrim')

    def warm_up(self) -> float:
        """One call on a blank observation (a learned backend loads its instruction encoder on its first
        call, seconds that the first client would otherwise wait for); returns its seconds."""
        meta = self.policy.metadata
        blank = Observation(image=np.zeros((*meta.image_size, 3), np.uint8), joint_positions=np.zeros(meta.action_dim),
                            joint_velocities=np.zeros(meta.action_dim), environment_state=np.zeros(0),
                            instruction='warm up', time=0.0, step=0)
        started = time.monotonic()
        self.policy.predict_action_chunk(blank)
        self.policy.reset()
        return time.monotonic() - started

    @property
    def port(self) -> int:
        return self._server.socket.getsockname()[1]

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def shutdown(self) -> None:
        """Stop accepting, close every open connection."""
        self._server.shutdown()
        with self._connections_lock:
            connections = list(self._connections)
        for ws in connections:
            ws.close()

    def _process_request(self, connection, request):
        """/healthz answers 200 without a key; a websocket handshake without the right key gets 401."""
        if request.path == wire.HEALTH_PATH:
            return connection.respond(http.HTTPStatus.OK, 'OK\n')
        if self.api_key:
            given = request.headers.get(wire.API_KEY_HEADER, '')
            if not hmac.compare_digest(given.encode(), f'{wire.API_KEY_SCHEME} {self.api_key}'.encode()):
                self.log(f'refused {connection.remote_address[0]}: missing or wrong API key')
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, 'missing or wrong API key\n')
        return None

    def _handle(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed
        peer = ws.remote_address[0] if ws.remote_address else '?'
        with self._connections_lock:
            self._connections.add(ws)
        self.log(f'connection from {peer}')
        try:
            ws.send(wire.packb(self.metadata))
            previous_total = None
            while True:
                frame = ws.recv()
                started = time.monotonic()
                reply = self._reply(frame)
                if isinstance(reply, str):
                    self.log(f'{peer}: {reply}; closing its connection')
                    ws.send(reply)
                    ws.close(ERROR_CLOSE_CODE, 'error; the previous frame says why')
                    return
                if previous_total is not None:
                    reply['server_timing']['prev_total_ms'] = previous_total * 1000
                ws.send(wire.packb(reply))
                previous_total = time.monotonic() - started
        except ConnectionClosed:
            pass
        finally:
            with self._connections_lock:
                self._connections.discard(ws)
            self.log(f'connection from {peer} closed')

    def _reply(self, frame) -> dict | str:
        """The reply frame's object for one request frame, or the text of an error frame."""
        try:
            observation = observation_from_request(wire.unpackb(frame), self.policy)
        except (wire.FrameError, PolicyInputError) as err:
            return f'bad observation: {err}'
        try:
            with self._infer_lock:
                started = time.monotonic()
                if self.policy.metadata.horizons:
                    chunk, h = self.policy.predict_chunk_and_horizon(observation)
                else:
                    chunk, h = self.policy.predict_action_chunk(observation), None
                infer_s = time.monotonic() - started
        except PolicyInputError as err:
            return f'bad observation: {err}'
        except Exception as err:   # the model failed: tell this client, keep serving
            self.log(traceback.format_exc())
            return f'inference failed: {type(err).__name__}: {err}'
        reply = {'actions': np.asarray(chunk, dtype=np.float64), 'policy_timing': {'infer_ms': infer_s * 1000},
                 'server_timing': {'infer_ms': infer_s * 1000}}
        if h is not None:
            reply['n_action_steps'] = int(h)
        return reply
