"""Turn a recipe's source specs into lazy streams of document texts.

A source spec names some files (or a Hugging Face dataset) and a format; `iter_documents`
yields one str per document. Everything streams: line formats are read line by line,
Parquet batch by batch, so memory does not grow with the size of a corpus. Problems in
the data become a one-line `DataError` naming the file and line, or (for records the
recipe allows to skip, and for empty or filtered-out documents) a count in a `SkipLog`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.data.sources.codes import code_records
from modeling.data.sources.delimited import csv_records, csv_rows
from modeling.data.sources.files import format_of, require_content, resolve_files
from modeling.data.sources.hub import hf_records
from modeling.data.sources.jsonl import jsonl_objects, jsonl_records
from modeling.data.sources.mds import TokenIds, mds_records
from modeling.data.sources.mimic import mimic3_records, mimic4_records
from modeling.data.sources.parquet import parquet_records
from modeling.data.sources.pubmed import pmc_records, pubmed_records
from modeling.data.sources.spec import DOMAIN_BY_FORMAT, DOMAINS, FORMATS, SourceSpec
from modeling.data.sources.text import text_file_records, text_records

__all__ = [
    "DOMAINS",
    "DOMAIN_BY_FORMAT",
    "FORMATS",
    "READERS",
    "SourceSpec",
    "TokenIds",
    "csv_rows",
    "iter_documents",
    "iter_file_records",
    "iter_records",
    "jsonl_objects",
    "resolve_files",
]

# format -> reader(spec, path, skips) yielding (where, text); `hf` reads a dataset id, not files
READERS = {
    "text": text_records,
    "text_files": text_file_records,
    "jsonl": jsonl_records,
    "csv": csv_records,
    "parquet": parquet_records,
    "pubmed": pubmed_records,
    "pmc": pmc_records,
    "mimic3": mimic3_records,
    "mimic4": mimic4_records,
    "codes": code_records,
    "mds": mds_records,
}


def iter_documents(spec: SourceSpec, skips: SkipLog) -> Iterator[str]:
    """Stream the source's document texts. Files are resolved and their formats chosen now,
    so a wrong path fails at once; the files themselves are read lazily."""
    return (text for _, text in iter_records(spec, skips))


def iter_records(spec: SourceSpec, skips: SkipLog, token_ids: bool = False) -> Iterator[tuple[str, str]]:
    """(where, text) of each non-empty document; `where` ("file:line", ...) names it for outputs and reports.
    With `token_ids`, a document that arrives as ids (an MDS id column) comes as `TokenIds`; without, it is
    refused: it has no text to tokenize or show."""
    if spec.format == "hf":
        return _nonempty_documents(spec, hf_records(spec, skips), skips, token_ids)
    return iter_file_records(spec, resolve_files(spec), skips, token_ids)


def iter_file_records(
    spec: SourceSpec, files: list[str], skips: SkipLog, token_ids: bool = False
) -> Iterator[tuple[str, str]]:
    """iter_records over some of the source's files (a share of the work of preparing a store)."""
    chosen = [(path, format_of(spec, path)) for path in files]
    return _nonempty_documents(spec, _records_from_files(spec, chosen, skips), skips, token_ids)


def _nonempty_documents(spec: SourceSpec, records, skips: SkipLog, token_ids: bool) -> Iterator[tuple[str, str]]:
    for where, text in records:
        if isinstance(text, TokenIds) and not token_ids:
            raise DataError(
                f"{where}: source '{spec.name}' holds token ids, not text; it can be prepared into a token store "
                "(whose tokenizer must be the one that wrote them), not read as text here"
            )
        if _is_blank(text):
            skips.add(spec.name, "empty document", where)
            continue
        yield where, text


def _is_blank(text) -> bool:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return True
    if isinstance(text, TokenIds):
        return not len(text)
    return not text.strip()


def _records_from_files(spec: SourceSpec, files, skips: SkipLog):
    for path, file_format in files:
        yield from _records_from_file(spec, path, file_format, skips)


def _records_from_file(spec: SourceSpec, path: str, file_format: str, skips: SkipLog):
    """Yields (where, text) pairs; `where` is "file:line" or similar, for skip reports."""
    try:
        # For text_files an empty file is one empty document, counted like any other.
        if file_format != "text_files":
            require_content(path)
        yield from READERS[file_format](spec, path, skips)
    except (OSError, EOFError, zlib.error) as error:  # unreadable file, corrupt gzip ...
        raise DataError(f"{path}: cannot read file: {error}") from error
