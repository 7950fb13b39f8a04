"""MosaicML Streaming (MDS) shards written byte by byte from the format's specification (mosaicml/streaming,
streaming/base/format/mds/{writer,encodings}.py and base/writer.py), with no MDS library: the tests' (and the
MDS benchmark's) source of shards the project's reader must read.

    index.json  {"shards": [entry, ...], "version": 2}, an entry's 11 keys sorted
    shard       <u4 N, <u4 offsets[N + 1] (absolute), the shard's config JSON, the samples
    sample      <u4 size of each variable-size column (sorted names), then each column's bytes
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np

# dtype -> the code the dynamic-dtype `ndarray` encoding writes
DTYPE_CODES = {
    "uint8": 8,
    "int8": 9,
    "uint16": 16,
    "int16": 17,
    "float16": 18,
    "uint32": 32,
    "int32": 33,
    "float32": 34,
    "uint64": 64,
    "int64": 65,
    "float64": 66,
}
FIXED_SIZES = {"int": 8, "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "int32": 4, "int64": 8, "float32": 4}


def column_size(encoding: str) -> int | None:
    """Bytes of a fixed-size column, or None (variable size: a length word in each sample)."""
    if encoding in FIXED_SIZES:
        return FIXED_SIZES[encoding]
    parts = encoding.split(":")
    if parts[0] == "ndarray" and len(parts) == 3:
        return int(np.prod([int(d) for d in parts[2].split(",")])) * np.dtype(parts[1]).itemsize
    return None


def encode(encoding: str, value) -> bytes:
    if isinstance(value, bytes):  # MDS stores bytes as given, whatever the column's encoding
        return value
    if encoding == "str":
        return value.encode("utf-8")
    if encoding == "int":
        return np.int64(value).tobytes()
    if encoding in FIXED_SIZES:
        return np.dtype(encoding).type(value).tobytes()
    if encoding == "json":
        return json.dumps(value).encode("utf-8")
    parts = encoding.split(":")
    if parts[0] != "ndarray":
        raise ValueError(f"no writer for encoding {encoding}")
    array = np.asarray(value)
    head = b""
    if len(parts) == 1:
        head += bytes([DTYPE_CODES[array.dtype.name]])
    else:
        array = array.astype(parts[1])
    if len(parts) < 3:  # the shape: (ndim << 2) | width code, then the dims in the narrowest width that holds them
        width = next(code for code, top in enumerate((2**8, 2**16, 2**32, 2**64)) if max(array.shape) < top)
        head += bytes([(array.ndim << 2) | width])
        head += np.asarray(array.shape, ("<u1", "<u2", "<u4", "<u8")[width]).tobytes()
    return head + array.astype(array.dtype.newbyteorder("<")).tobytes()


def shard_bytes(samples: list[dict], columns: dict[str, str], config: dict) -> bytes:
    names = sorted(columns)
    sizes = [column_size(columns[name]) for name in names]
    encoded = []
    for sample in samples:
        data = [encode(columns[name], sample[name]) for name in names]
        head = np.asarray([len(d) for d, s in zip(data, sizes, strict=True) if s is None], "<u4").tobytes()
        encoded.append(head + b"".join(data))
    config_data = json.dumps(config, sort_keys=True).encode("utf-8")
    offsets = np.cumsum([0] + [len(e) for e in encoded]).astype("<u4")
    offsets += 4 + 4 * (len(samples) + 1) + len(config_data)
    return np.uint32(len(samples)).astype("<u4").tobytes() + offsets.tobytes() + config_data + b"".join(encoded)


def compress(compression: str, data: bytes) -> bytes:
    family = compression.split(":")[0]
    if family == "zstd":
        import zstandard

        level = int(compression.split(":")[1]) if ":" in compression else 3
        return zstandard.ZstdCompressor(level=level).compress(data)  # one frame, content size recorded
    if family == "gz":
        return gzip.compress(data)
    raise ValueError(compression)


def write_mds(
    folder: Path,
    samples: list[dict],
    columns: dict[str, str],
    compression: str | None = None,
    samples_per_shard: int = 100,
    hashes: tuple[str, ...] = ("sha1",),
) -> Path:
    """`folder`/index.json and its shards, as MDSWriter(out=folder, columns=..., compression=...) leaves them:
    compressed shards only as shard.NNNNN.mds.EXT."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(columns)
    config = {
        "column_encodings": [columns[n] for n in names],
        "column_names": names,
        "column_sizes": [column_size(columns[n]) for n in names],
        "compression": compression,
        "format": "mds",
        "hashes": list(hashes),
        "size_limit": 1 << 26,
        "version": 2,
    }
    entries = []
    for number, start in enumerate(range(0, max(len(samples), 1), samples_per_shard)):
        chunk = samples[start : start + samples_per_shard]
        raw = shard_bytes(chunk, columns, config)
        raw_name = f"shard.{number:05d}.mds"
        raw_info = {"basename": raw_name, "bytes": len(raw), "hashes": _digests(raw, hashes)}
        zip_info = None
        if compression:
            packed = compress(compression, raw)
            zip_name = f"{raw_name}.{compression.split(':')[0]}"
            (folder / zip_name).write_bytes(packed)
            zip_info = {"basename": zip_name, "bytes": len(packed), "hashes": _digests(packed, hashes)}
        else:
            (folder / raw_name).write_bytes(raw)
        entries.append({"samples": len(chunk), "raw_data": raw_info, "zip_data": zip_info, **config})
    index = {"shards": [dict(sorted(e.items())) for e in entries], "version": 2}
    (folder / "index.json").write_text(json.dumps(index, sort_keys=True))
    return folder


def _digests(data: bytes, names) -> dict:
    return {name: hashlib.new(name, data).hexdigest() for name in names}
