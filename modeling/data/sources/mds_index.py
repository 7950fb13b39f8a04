"""Which shards an MDS source names: the folders' (or files') `index.json`, read and checked once per change.
The reader of the shards themselves is `mds.py`; this half is apart so that `files.py` can resolve an MDS
source's files without importing the readers."""

from __future__ import annotations

import json
import os
from functools import lru_cache

from modeling.common.errors import DataError
from modeling.data.sources.spec import SourceSpec

INDEX = "index.json"


def mds_shard_files(spec: SourceSpec, matches: list[str], pattern: str) -> list[str]:
    """The shard files of the MDS folders or index.json files a pattern matched, in index order."""
    indexes = []
    for match in matches:
        if os.path.isdir(match):
            if not os.path.isfile(os.path.join(match, INDEX)):
                inside = sorted(os.path.relpath(p, match) for p in _indexes_below(match))[:3]
                hint = f"; name a folder with one, e.g. {os.path.join(match, inside[0])}" if inside else ""
                raise DataError(f"source '{spec.name}': {match} has no {INDEX} (not an MDS folder){hint}")
            indexes.append(os.path.join(match, INDEX))
        elif os.path.basename(match) == INDEX:
            indexes.append(match)
    if not indexes:
        raise DataError(f"source '{spec.name}': '{pattern}' names no MDS folder or {INDEX}")
    files = []
    for index in indexes:
        folder = os.path.dirname(index)
        for number, shard in enumerate(read_index(index)):
            raw = os.path.join(folder, shard["raw_data"]["basename"])
            packed = os.path.join(folder, shard["zip_data"]["basename"]) if shard.get("zip_data") else None
            chosen = raw if os.path.isfile(raw) or not packed else packed  # raw: a reader decompressed it already
            if not os.path.isfile(chosen):
                names = " or ".join(os.path.relpath(p, folder) for p in (packed, raw) if p)
                raise DataError(f"{index}: shard {number} ({names}) is missing")
            files.append(chosen)
    return files


def _indexes_below(folder: str) -> list[str]:
    found = []
    for root, subfolders, names in os.walk(folder):
        subfolders[:] = sorted(s for s in subfolders if not s.startswith("."))
        if INDEX in names:
            found.append(os.path.join(root, INDEX))
    return found


def read_index(path: str) -> list[dict]:
    return list(_read_index(path, os.stat(path).st_mtime_ns))


@lru_cache(maxsize=64)
def _read_index(path: str, mtime_ns: int) -> tuple[dict, ...]:
    try:
        index = json.loads(open(path, encoding="utf-8").read())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable MDS index ({error})") from None
    if not isinstance(index, dict) or index.get("version") != 2 or not isinstance(index.get("shards"), list):
        raise DataError(f"{path}: not an MDS index of version 2 (needs {{'version': 2, 'shards': [...]}})")
    for number, shard in enumerate(index["shards"]):
        problem = _shard_problem(shard)
        if problem:
            raise DataError(f"{path}: shard {number}: {problem}")
    return tuple(index["shards"])


def _shard_problem(shard) -> str | None:
    if not isinstance(shard, dict):
        return "not a mapping"
    if shard.get("format") != "mds":
        return f"format {shard.get('format')!r}, not 'mds'"
    needed = ("column_names", "column_encodings", "column_sizes", "raw_data", "samples")
    missing = [key for key in needed if key not in shard]
    if missing:
        return f"lacks {', '.join(missing)}"
    names, encodings, sizes = shard["column_names"], shard["column_encodings"], shard["column_sizes"]
    if not (isinstance(names, list) and len(names) == len(encodings) == len(sizes)):
        return "column_names, column_encodings and column_sizes differ in length"
    if not isinstance(shard["raw_data"], dict) or "basename" not in shard["raw_data"]:
        return "raw_data has no basename"
    return None
