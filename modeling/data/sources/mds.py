"""`mds`: MosaicML Streaming (MDS) shards, the format ModernBERT's training stack tokenizes corpora into, read
without mosaicml-streaming (which pins transformers < 5).

A source names MDS folders (each with its `index.json`, e.g. `data/mds/train`) or index.json files; its files are
the shards the indexes list, in their order (the compressed file, unless already decompressed beside it), so a
store's parts and fingerprints are shards. The format, as MosaicML Streaming writes it (little-endian throughout):

    index.json   {"version": 2, "shards": [{"column_names", "column_encodings", "column_sizes", "compression",
                 "raw_data": {"basename", "bytes"}, "zip_data": {...} | null, "samples", ...}, ...]}
    shard        uint32 N; uint32 offsets[N + 1] (absolute); the shard's config JSON; N samples
    sample       uint32 size of each variable-size column (in column order), then every column's bytes
    compressed   the whole shard as one zstd / gz / bz2 stream

The text column (`text_column`; default the first of text, input_ids, tokens the shards have) is either text
(`str`) or token ids (`ndarray[:dtype]`, or `bytes` holding int64 ids as ModernBERT's converter writes them).
Ids are kept as ids (`TokenIds`): the store checks them against its tokenizer and never tokenizes them again.
"""

from __future__ import annotations

import bz2
import gzip
import math
import os
import struct
from dataclasses import dataclass

import numpy as np

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.data.sources.mds_index import INDEX, read_index
from modeling.data.sources.records import bad_record
from modeling.data.sources.spec import SourceSpec

# the default columns, in order: ModernBERT's text MDS, its tokenized MDS, its older converter's
TEXT_COLUMNS = ("text", "input_ids", "tokens")
# dtype codes of the `ndarray` encoding when the dtype is not in the encoding string
NDARRAY_DTYPES = {
    code: np.dtype(name).newbyteorder("<")
    for code, name in (
        (8, "uint8"),
        (9, "int8"),
        (16, "uint16"),
        (17, "int16"),
        (18, "float16"),
        (32, "uint32"),
        (33, "int32"),
        (34, "float32"),
        (64, "uint64"),
        (65, "int64"),
        (66, "float64"),
    )
}
SHAPE_WIDTHS = "BHIQ"  # struct codes of the shape's uint8 / 16 / 32 / 64
INTEGER_KINDS = "iu"
# how many levels above a shard its index.json may be (a merged index names shards as SUBFOLDER/shard...)
INDEX_LEVELS = 3


@dataclass(frozen=True)
class TokenIds:
    """A document that arrives as token ids (an MDS id column), not text."""

    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _entry_of(path: str) -> tuple[str, dict]:
    """The index.json listing this shard file, and its entry there."""
    folder = os.path.dirname(os.path.abspath(path))
    for _ in range(INDEX_LEVELS + 1):
        index = os.path.join(folder, INDEX)
        if os.path.isfile(index):
            name = os.path.relpath(os.path.abspath(path), folder).replace(os.sep, "/")
            for shard in read_index(index):
                if name in (shard["raw_data"]["basename"], (shard.get("zip_data") or {}).get("basename")):
                    return index, shard
        folder = os.path.dirname(folder)
    raise DataError(f"{path}: no {INDEX} beside or above it lists this shard")


# ------------------------------------------------------------------------------------ reading


def mds_records(spec: SourceSpec, path: str, skips: SkipLog):
    """(where, text or TokenIds) for each sample of one shard."""
    index, shard = _entry_of(path)
    data = _shard_bytes(path, shard)
    column = _column(spec, shard, index)
    names, encodings, sizes = shard["column_names"], shard["column_encodings"], shard["column_sizes"]
    position = names.index(column)
    variable = [j for j, size in enumerate(sizes) if not size]
    count = int(np.frombuffer(data, "<u4", count=1)[0]) if len(data) >= 4 else -1
    if count != shard["samples"] or len(data) < 4 * (count + 2):
        raise DataError(f"{path}: holds {count} samples, its index says {shard['samples']} (damaged or truncated)")
    offsets = np.frombuffer(data, "<u4", count=count + 1, offset=4).astype(np.int64)
    if count and (offsets[-1] != len(data) or np.any(np.diff(offsets) < 0) or offsets[0] < 4 * (count + 2)):
        raise DataError(f"{path}: its sample offsets do not fit the file's {len(data):,} bytes (damaged)")
    decode = _decoder(encodings[position], column, path)
    header = struct.Struct(f"<{len(variable)}I")  # the sizes of the variable-size columns, first in each sample
    before = range(position)  # the columns stored ahead of ours
    offsets = offsets.tolist()
    for sample in range(count):
        begin, end = offsets[sample], offsets[sample + 1]
        if end - begin < header.size:
            bad_record(spec, skips, f"{path}#sample {sample}", "shorter than its column sizes")
            continue
        size_of = dict(zip(variable, header.unpack_from(data, begin), strict=True))
        start = begin + header.size + sum(size_of.get(j, sizes[j]) for j in before)
        stop = start + size_of.get(position, sizes[position])
        if stop > end:
            bad_record(spec, skips, f"{path}#sample {sample}", f"column '{column}' runs past the sample's end")
            continue
        try:
            yield f"{path}#sample {sample}", decode(data[start:stop])
        except ValueError as error:
            bad_record(spec, skips, f"{path}#sample {sample}", f"column '{column}': {error}")


def _shard_bytes(path: str, shard: dict) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read()
    if os.path.basename(path) != os.path.basename(shard["raw_data"]["basename"]):
        data = _decompress(path, shard.get("compression") or "", data)
    expected = shard["raw_data"].get("bytes")
    if isinstance(expected, int) and len(data) != expected:
        raise DataError(f"{path}: {len(data):,} bytes once read, its index says {expected:,} (damaged or truncated)")
    return data


def _decompress(path: str, compression: str, data: bytes) -> bytes:
    family = compression.split(":")[0]
    openers = {"zstd": _unzstd, "gz": gzip.decompress, "bz2": bz2.decompress}
    if family not in openers:
        raise DataError(
            f"{path}: compressed with {compression!r}, which this reader does not open ({', '.join(openers)}); "
            "decompress the shards first"
        )
    try:
        return openers[family](data)
    except Exception as error:  # each library raises its own class (zstandard.ZstdError, gzip.BadGzipFile, ...)
        raise DataError(f"{path}: cannot decompress it as {family} ({error})") from None


def _unzstd(data: bytes) -> bytes:
    import zstandard

    # frame by frame, so that a frame written without its content size (a streaming writer's) reads too, and a
    # frame cut short is an error rather than fewer bytes
    out = []
    while data:
        frame = zstandard.ZstdDecompressor().decompressobj()
        out.append(frame.decompress(data))
        if not frame.eof:
            raise ValueError("the last frame is cut short")
        data = frame.unused_data
    return b"".join(out)


def _column(spec: SourceSpec, shard: dict, index: str) -> str:
    names = shard["column_names"]
    if spec.text_column is not None:
        if spec.text_column not in names:
            raise DataError(f"{index}: no column '{spec.text_column}' (columns: {', '.join(names)})")
        return spec.text_column
    for name in TEXT_COLUMNS:
        if name in names:
            return name
    raise DataError(
        f"{index}: none of the columns {', '.join(TEXT_COLUMNS)} (columns: {', '.join(names)}); set text_column"
    )


def _decoder(encoding: str, column: str, path: str):
    """bytes of one value -> text or TokenIds, for the column's encoding."""
    if encoding == "str":
        return _text
    if encoding == "bytes":  # ModernBERT's and llm-foundry's converters: int64 ids as raw bytes
        return _int64_ids
    if encoding == "ndarray" or encoding.startswith("ndarray:"):
        parts = encoding.split(":")
        try:
            dtype = np.dtype(parts[1]).newbyteorder("<") if len(parts) > 1 and parts[1] else None
            shape = tuple(int(d) for d in parts[2].split(",")) if len(parts) > 2 else None
        except (TypeError, ValueError):
            raise DataError(
                f"{path}: column '{column}' has the encoding '{encoding}', which is not one MDS writes"
            ) from None
        if dtype is not None and dtype.kind not in INTEGER_KINDS:
            raise DataError(f"{path}: column '{column}' holds {dtype} arrays, not token ids")
        return lambda value: _ndarray_ids(value, dtype, shape)
    raise DataError(
        f"{path}: column '{column}' is encoded as '{encoding}', not text (str) or token ids (ndarray, bytes)"
    )


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not valid UTF-8 (byte 0x{error.object[error.start]:02x} at offset {error.start})") from None


def _int64_ids(value: bytes) -> TokenIds:
    if len(value) % 8:
        raise ValueError(f"{len(value)} bytes, not a whole number of int64 ids")
    return TokenIds(np.frombuffer(value, "<i8"))


def _ndarray_ids(value: bytes, dtype, shape) -> TokenIds:
    at = 0
    if dtype is None:
        if not value:
            raise ValueError("empty")
        code = value[0]
        if code not in NDARRAY_DTYPES:
            raise ValueError(f"unknown array dtype code {code}")
        dtype, at = NDARRAY_DTYPES[code], 1
        if dtype.kind not in INTEGER_KINDS:
            raise ValueError(f"{dtype} array, not token ids")
    if shape is None:
        if len(value) <= at:
            raise ValueError("no array header")
        ndim, width = value[at] >> 2, SHAPE_WIDTHS[value[at] & 3]
        shape = struct.unpack_from(f"<{ndim}{width}", value, at + 1)
        at += 1 + ndim * struct.calcsize(width)
    count = math.prod(shape)
    if len(value) - at != count * dtype.itemsize:
        raise ValueError(f"an array of shape {shape} needs {count * dtype.itemsize} bytes, {len(value) - at} found")
    return TokenIds(np.frombuffer(value, dtype, count=count, offset=at))
