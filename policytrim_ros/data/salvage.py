"""What a damaged MCAP episode bag still holds: its intact chunks, read in file order.

rosbags reads an MCAP file through the summary and footer at its end, so a file cut short (a
recorder killed, a copy interrupted, a full disk) or one whose bag directory lost its
metadata.yaml does not open at all. Yet MCAP writes records one after another: the header, then
the data chunks (each a compressed block of schema, channel and message records with its own
CRC), then the summary. ``scan_mcap`` walks the records from the start and keeps every chunk that
is complete and passes its CRC, up to the first one that is not; the rosbag2 metadata record
(which rosbags and rosbag2 write after the last chunk) gives the bag's custom_data when the dir
has no metadata.yaml. ``salvage_episode_bag`` turns that into an Episode through the same
alignment as an intact bag:

- every chunk intact (only the summary or footer lost, or only metadata.yaml): the whole episode,
  end event and success included;
- cut inside the data: the steps up to the last one whose images and joint state were recorded,
  a prefix of the demonstration. Its end event is lost, so it does not count as successful (the
  bag's custom_data success describes the whole recording, not the prefix).
"""
from __future__ import annotations

import struct
from pathlib import Path

import yaml

from policytrim_ros.data.bag import (EVENT_TOPIC, PROVENANCE_TOPIC_TYPES, TOPIC_TYPES, BagError, Episode,
                                     bag_custom_data, episode_from_messages, episode_topics, typestore)

_MAGIC = b'\x89MCAP0\r\n'
_CHANNEL, _SCHEMA, _MESSAGE, _CHUNK, _METADATA, _DATA_END, _FOOTER = 0x04, 0x03, 0x05, 0x06, 0x0C, 0x0F, 0x02
_YAML_LOADER = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)


def _string(data: bytes, offset: int) -> tuple[str, int]:
    (size,) = struct.unpack_from('<I', data, offset)
    return data[offset + 4:offset + 4 + size].decode(), offset + 4 + size


def _records(data: bytes, offset: int = 0):
    """Yield (opcode, content) of the complete records of ``data`` from ``offset`` on."""
    while offset + 9 <= len(data):
        opcode, size = data[offset], struct.unpack_from('<Q', data, offset + 1)[0]
        if offset + 9 + size > len(data):
            return   # cut inside this record
        yield opcode, data[offset + 9:offset + 9 + size]
        offset += 9 + size


def _chunk_records(content: bytes) -> bytes:
    """The decompressed, CRC-checked records of a Chunk record (ReaderError/ValueError if damaged)."""
    # rosbags (pinned in requirements.txt) validates the size and CRC and knows the compressions
    from rosbags.rosbag2.storage_mcap import decompress
    _, _, size, crc = struct.unpack_from('<QQQI', content)
    compression, offset = _string(content, 28)
    (length,) = struct.unpack_from('<Q', content, offset)
    return decompress(content[offset + 8:offset + 8 + length], compression, size, crc)


def scan_mcap(path: Path) -> tuple[dict[int, str], dict[int, str], list[tuple[int, int, bytes]], dict, bool]:
    """(channel id -> topic, channel id -> message type, [(channel id, log time ns, raw CDR)],
    custom_data of the embedded rosbag2 metadata ({} if lost), whether every chunk was intact and
    the data section ended) of an MCAP file, reading records up to the first damaged one."""
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        raise BagError(f'{path} is not an MCAP file (no MCAP magic at its start)')
    schemas: dict[int, str] = {}
    topics: dict[int, str] = {}
    types: dict[int, str] = {}
    messages: list[tuple[int, int, bytes]] = []
    custom: dict = {}
    complete = False

    def take(opcode: int, content: bytes) -> None:
        if opcode == _SCHEMA:
            schemas[struct.unpack_from('<H', content)[0]] = _string(content, 2)[0]
        elif opcode == _CHANNEL:
            channel, schema = struct.unpack_from('<HH', content)
            topics[channel], types[channel] = _string(content, 4)[0], schemas.get(schema, '')
        elif opcode == _MESSAGE:
            channel, _, log_ns, _ = struct.unpack_from('<HIQQ', content)
            messages.append((channel, log_ns, content[22:]))

    for opcode, content in _records(data, len(_MAGIC)):
        if opcode == _CHUNK:
            try:
                records = _chunk_records(content)
            except Exception:  # noqa: BLE001 - a bad size, CRC or compressed stream: keep what came before
                break
            for inner in _records(records):
                take(*inner)
        elif opcode == _METADATA and _string(content, 0)[0] == 'rosbag2':
            custom = _embedded_custom_data(content)
        elif opcode in (_DATA_END, _FOOTER):
            complete = True
            break
        else:
            take(opcode, content)
    return topics, types, messages, custom, complete


def _embedded_custom_data(content: bytes) -> dict[str, str]:
    """custom_data of a rosbag2 Metadata record (its serialized metadata.yaml)."""
    _, offset = _string(content, 0)
    offset += 4   # the map's byte length
    fields = {}
    while offset < len(content):
        key, offset = _string(content, offset)
        fields[key], offset = _string(content, offset)
    try:   # the fields of metadata.yaml's rosbag2_bagfile_information
        info = yaml.load(fields.get('serialized_metadata', ''), Loader=_YAML_LOADER) or {}
        info = info.get('rosbag2_bagfile_information', info)
        return {str(k): str(v) for k, v in (info.get('custom_data') or {}).items()}
    except (yaml.YAMLError, TypeError, AttributeError):
        return {}


def salvage_episode_bag(path: str | Path) -> tuple[Episode, str]:
    """(the Episode a damaged bag still holds, a note saying what was recovered) from a bag
    directory with one .mcap file, or a bare .mcap file; BagError if nothing usable is left."""
    path = Path(path)
    files = sorted(path.glob('*.mcap')) if path.is_dir() else [path]
    if len(files) != 1:
        raise BagError(f'{path}: salvage reads a bag of one .mcap file; found {len(files)} '
                       f'({[f.name for f in files]})')
    topics, types, raw, embedded, complete = scan_mcap(files[0])
    if not raw:
        raise BagError(f'{files[0]}: no intact chunk holds a message')
    cameras = episode_topics({topics[c]: types[c] for c in topics}, path)
    expected = {*TOPIC_TYPES, *PROVENANCE_TOPIC_TYPES, *cameras}
    wanted = {c: topics[c] for c in topics if topics[c] in expected}
    store = typestore()
    messages: dict[str, list] = {t: [] for t in expected}
    try:
        for channel, log_ns, data in sorted((m for m in raw if m[0] in wanted), key=lambda m: m[1]):
            messages[wanted[channel]].append((log_ns, store.deserialize_cdr(data, types[channel])))
    except Exception as err:  # noqa: BLE001 - a CRC-checked chunk with a bad message is still a damaged bag
        raise BagError(f'{files[0]}: a recovered message does not deserialize: {type(err).__name__}: {err}') from err
    try:
        custom = (bag_custom_data(path) if path.is_dir() else {}) or embedded
    except BagError:   # a corrupt metadata.yaml
        custom = embedded
    episode = episode_from_messages(path, messages, cameras, custom, complete=False)
    ended = any(m.event != 0 for _, m in messages.get(EVENT_TOPIC, []))
    what = ('the whole episode, its end event included' if ended else
            'no end event (the rest of the recording is lost): not counted as successful')
    return episode, (f'{path}: recovered {episode.steps} of the steps from the intact chunks of {files[0].name}'
                     f"{'' if complete else ' (cut short)'}; {what}")
