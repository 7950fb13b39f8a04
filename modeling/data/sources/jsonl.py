"""`jsonl`: one JSON object per line, the text in `text_column`."""

from __future__ import annotations

import json

from modeling.common.skips import SkipLog
from modeling.data.sources.records import bad_record, good_lines
from modeling.data.sources.spec import SourceSpec


def jsonl_objects(spec: SourceSpec, path: str, skips: SkipLog):
    """(where, object) for each well-formed JSON object line (fine-tuning loaders read whole records)."""
    for line_number, line in good_lines(spec, path, skips):
        if not line.strip():
            continue  # blank lines separate nothing and are not records
        where = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            bad_record(spec, skips, where, f"malformed JSON ({error.msg} at column {error.colno})")
            continue
        if not isinstance(record, dict):
            bad_record(spec, skips, where, f"expected a JSON object, got {type(record).__name__}")
            continue
        yield where, record


def jsonl_records(spec: SourceSpec, path: str, skips: SkipLog):
    column = spec.text_column or "text"
    for where, record in jsonl_objects(spec, path, skips):
        if column not in record:
            found = ", ".join(map(repr, record)) or "none"
            bad_record(spec, skips, where, f"no field '{column}' (fields: {found})")
            continue
        text = record[column]
        if text is not None and not isinstance(text, str):
            problem = f"field '{column}' holds {type(text).__name__}, not text"
            bad_record(spec, skips, where, problem)
            continue
        yield where, text
