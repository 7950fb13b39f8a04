"""`codes`: code tables as sentences ("ICD 10 code for E11.9: ...")."""

from __future__ import annotations

import re

from modeling.common.skips import SkipLog
from modeling.data.sources.delimited import csv_rows
from modeling.data.sources.files import extension
from modeling.data.sources.records import bad_record, good_lines
from modeling.data.sources.spec import SourceSpec


def code_records(spec: SourceSpec, path: str, skips: SkipLog):
    """One sentence per code, e.g. "ICD 10 code for E11.9: Type 2 diabetes mellitus ..."."""
    if extension(path) in (".csv", ".tsv"):
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
    for line_number, line in good_lines(spec, path, skips):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        parts = line.split(None, 1)
        if len(parts) < 2:
            bad_record(spec, skips, where, "expected 'CODE DESCRIPTION', found only a code")
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
