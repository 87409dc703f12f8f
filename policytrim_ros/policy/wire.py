"""The openpi websocket policy-server protocol on the wire: msgpack frames carrying numpy arrays.

What openpi's ``websocket_policy_server.py`` and ``openpi_client`` speak (``serve_policy.py`` of
π0 / π0.5 servers): a plain websocket (default port 8000, no compression); on connect the server
sends one binary frame, its metadata dict; then every binary request frame (an observation dict)
gets one binary reply frame (``{"actions": (N, D), "policy_timing": ..., "server_timing": ...}``).
A *text* frame is a server-side error, after which the server closes the connection (code 1011).
``GET /healthz`` answers 200. An optional ``Authorization: Api-Key <key>`` header authenticates.

Arrays travel as msgpack maps with byte-string keys, exactly as openpi's ``msgpack_numpy``:
``{b"__ndarray__": True, b"data": a.tobytes(), b"dtype": a.dtype.str, b"shape": a.shape}`` and
scalars as ``{b"__npgeneric__": True, b"data": x.item(), b"dtype": x.dtype.str}``. Decoding here is
strict where openpi's is not (the server faces the network): only bool, integer and float dtypes,
a shape of non-negative ints whose size matches the data, and string map keys. msgpack itself
never builds code objects (no pickle anywhere).
"""
from __future__ import annotations

import math

import msgpack
import numpy as np

DEFAULT_PORT = 8000
"""openpi's serve_policy.py port."""
HEALTH_PATH = '/healthz'
API_KEY_HEADER = 'Authorization'
API_KEY_SCHEME = 'Api-Key'
ALLOWED_KINDS = frozenset('biuf')
"""dtype kinds an array may have: bool, signed and unsigned integers, floats (openpi refuses V, O, c)."""


class FrameError(ValueError):
    """A frame is not a well-formed msgpack-numpy message."""


def api_key_header(api_key: str) -> dict[str, str]:
    """The header a client sends to authenticate: ``{'Authorization': 'Api-Key <key>'}``."""
    return {API_KEY_HEADER: f'{API_KEY_SCHEME} {api_key}'}


def _pack_default(obj):
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise FrameError(f'cannot send dtype {obj.dtype} (only bool, int, uint and float arrays)')
        if isinstance(obj, np.ndarray):
            return {b'__ndarray__': True, b'data': obj.tobytes(), b'dtype': obj.dtype.str, b'shape': obj.shape}
        return {b'__npgeneric__': True, b'data': obj.item(), b'dtype': obj.dtype.str}
    raise TypeError(f'cannot serialize {type(obj).__name__}')


def packb(obj) -> bytes:
    """One msgpack frame of ``obj`` (dicts, lists, str, numbers, bytes, numpy arrays and scalars)."""
    return msgpack.packb(obj, default=_pack_default)


def _dtype(value) -> np.dtype:
    if not isinstance(value, str):
        raise FrameError(f'array dtype {value!r} is not a string')
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise FrameError(f'array dtype {value!r} is not a numpy dtype string') from None
    if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise FrameError(f'array dtype {value!r} is not allowed (only bool, int, uint and float)')
    return dtype


def _unpack_hook(obj: dict):
    if b'__ndarray__' in obj:
        data, shape = obj.get(b'data'), obj.get(b'shape')
        dtype = _dtype(obj.get(b'dtype'))
        if not isinstance(data, bytes):
            raise FrameError('array data is not a byte string')
        if not isinstance(shape, (list, tuple)) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise FrameError(f'array shape {shape!r} is not a list of non-negative integers')
        if len(data) != math.prod(shape) * dtype.itemsize:
            raise FrameError(f'array data has {len(data)} bytes; shape {list(shape)} of {dtype} needs '
                             f'{math.prod(shape) * dtype.itemsize}')
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if b'__npgeneric__' in obj:
        dtype, item = _dtype(obj.get(b'dtype')), obj.get(b'data')
        if isinstance(item, (bytes, str, list, dict)) or item is None:
            raise FrameError(f'scalar data {item!r} is not a number')
        try:
            return dtype.type(item)
        except (OverflowError, ValueError, TypeError) as err:
            raise FrameError(f'scalar {item!r} does not fit {dtype}: {err}') from None
    return obj


def unpackb(frame: bytes):
    """The object of one msgpack frame, arrays decoded read-only (FrameError if malformed).

    Map keys must be strings (or the byte strings of the array encoding); no extension types.
    """
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise FrameError(f'expected a binary frame, got {type(frame).__name__}')
    try:
        return msgpack.unpackb(frame, object_hook=_unpack_hook, raw=False, strict_map_key=True)
    except FrameError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            RecursionError) as err:
        raise FrameError(f'not a msgpack frame: {err}') from None
