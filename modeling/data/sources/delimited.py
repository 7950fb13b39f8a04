"""`csv` (and `.tsv`): a header row, the text in `text_column`; `csv_rows` also serves MIMIC, codes and the
fine-tuning loaders."""

from __future__ import annotations

import csv

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.data.sources.files import extension, open_binary
from modeling.data.sources.records import DecodedLines, bad_record, describe_utf8_error, undecodable
from modeling.data.sources.spec import CSV_FIELD_SIZE_LIMIT, SourceSpec


def csv_rows(spec: SourceSpec, path: str, skips: SkipLog, required: list[str]):
    """(where, row dict) for each well-formed record; `where` is the line the record starts
    on, since quoted fields (MIMIC notes) span many lines."""
    csv.field_size_limit(CSV_FIELD_SIZE_LIMIT)
    delimiter = "\t" if extension(path) == ".tsv" else ","
    with open_binary(path) as handle:
        lines = DecodedLines(handle)
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
                bad_record(spec, skips, where, f"malformed CSV record ({error})")
                continue
            bad = lines.take_bad()
            if bad:
                undecodable(spec, skips, f"{path}:{bad[0]}", bad[1])
                continue
            if not row:
                continue  # a blank line is not a record
            if len(row) != len(header):
                problem = f"record has {len(row)} fields, the header has {len(header)}"
                bad_record(spec, skips, where, problem)
                continue
            yield where, dict(zip(header, row, strict=True))


def _csv_header(path: str, lines: DecodedLines, reader, required: list[str]) -> list[str]:
    try:
        header = next(reader)
    except csv.Error as error:
        raise DataError(f"{path}:1: malformed CSV header ({error})") from None
    bad = lines.take_bad()
    if bad:
        raise DataError(f"{path}:{bad[0]}: {describe_utf8_error(bad[1])}")
    missing = [column for column in required if column not in header]
    if missing:
        raise DataError(f"{path}: no column {', '.join(map(repr, missing))} (columns found: {', '.join(header)})")
    return header


def csv_records(spec: SourceSpec, path: str, skips: SkipLog):
    column = spec.text_column or "text"
    for where, row in csv_rows(spec, path, skips, required=[column]):
        yield where, row[column]
