"""Read the records of an offline W&B run file (``run-<id>.wandb``): W&B ships no reader.

The file is W&B's header (``:W&B``, a 2-byte magic, a version byte) followed by LevelDB's log
format: 32 KiB blocks of chunks, each with a CRC (4 bytes), a length (2) and a type (1: full,
2: first, 3: middle, 4: last), holding protobuf ``Record`` messages."""

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32768
HEADER = 7


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the rest of a block too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        pending += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def items(record: Any) -> dict[str, str]:
    """A history, summary or config record's key -> JSON value."""
    kind = record.WhichOneof("record_type")
    entries = {"history": "item", "summary": "update", "config": "update"}[kind]
    rows = getattr(getattr(record, kind), entries)
    return {(r.key or "/".join(r.nested_key)): r.value_json for r in rows}
