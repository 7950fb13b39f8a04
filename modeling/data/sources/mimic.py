"""`mimic3` (NOTEEVENTS.csv: ISERROR rows skipped, `categories` filter) and `mimic4` (MIMIC-IV-Note CSVs)."""

from __future__ import annotations

import logging

from modeling.common.skips import SkipLog
from modeling.data.sources.delimited import csv_rows
from modeling.data.sources.records import casefolded
from modeling.data.sources.spec import SourceSpec

log = logging.getLogger(__name__)


def mimic3_records(spec: SourceSpec, path: str, skips: SkipLog):
    column = spec.text_column or "TEXT"
    wanted = casefolded(spec.categories)
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


def mimic4_records(spec: SourceSpec, path: str, skips: SkipLog):
    column = spec.text_column or "text"
    wanted = casefolded(spec.categories)
    for where, row in csv_rows(spec, path, skips, required=[column]):
        if wanted and "note_type" not in row:
            # Only some MIMIC-IV note files have note_type; say once that this one is unfiltered.
            log.warning("%s: no note_type column, so 'categories' cannot filter this file", path)
            wanted = None
        if wanted and row["note_type"].strip().casefold() not in wanted:
            skips.add(spec.name, "filtered: category", where)
            continue
        yield where, row[column]
