"""Phenotype annotations: PhysioNet's `ACTdb102003.csv` (one row per note and annotator, a 0/1 column per
phenotype plus `NONE`) joined on ROW_ID with MIMIC-III `NOTEEVENTS.csv(.gz)`; one example per note."""

from __future__ import annotations

import logging
from pathlib import Path

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.data.sources import SourceSpec, csv_rows
from modeling.finetune.examples import Example, TaskLabels
from modeling.finetune.loaders.base import bad_record, data_path
from modeling.finetune.loaders.spec import DataSpec

log = logging.getLogger(__name__)


PHENOTYPE_ANNOTATIONS = "ACTdb102003.csv"
NOTEEVENTS_NAMES = ("NOTEEVENTS.csv.gz", "NOTEEVENTS.csv")
NO_PHENOTYPE = "NONE"


def load_phenotype(spec: DataSpec, task: TaskLabels, skips: SkipLog) -> list[Example]:
    """One example per annotated note (group = ROW_ID, no split), its text from NOTEEVENTS.

    data.path is the folder holding ACTdb102003.csv (or that file itself); data.notes names NOTEEVENTS
    relative to that folder (default: NOTEEVENTS.csv.gz, else NOTEEVENTS.csv there). The label columns are
    the config's labels. A note's annotator rows are combined per label by data.label_combination:
    `majority` (positive when at least half of its rows mark it), `any` or `all`. A NONE row counts as
    marking nothing; a row with NONE=1 and any label set is inconsistent (a bad record).
    """
    annotations = data_path(spec)
    if annotations.is_dir():
        annotations = data_path(spec, PHENOTYPE_ANNOTATIONS)
    notes_file = _noteevents_file(spec, annotations.parent)
    votes = _annotator_votes(annotations, spec, task, skips)
    texts = _note_texts(notes_file, set(votes), spec, task.name, skips)
    examples = []
    for row_id, (where, rows) in votes.items():
        if row_id not in texts:
            bad_record(spec, skips, task.name, where, f"note not found in {notes_file}")
            continue
        labels = [
            label
            for label in task.labels
            if _combined(sum(label in marked for marked in rows), len(rows), spec.label_combination)
        ]
        examples.append(Example(id=f"{annotations}#ROW_ID={row_id}", text=texts[row_id], labels=labels, group=row_id))
    log.info(
        "%s: %d annotator rows combined into %d notes (label_combination: %s)",
        task.name,
        sum(len(rows) for _, rows in votes.values()),
        len(votes),
        spec.label_combination,
    )
    return examples


def _noteevents_file(spec: DataSpec, folder: Path) -> Path:
    if spec.notes:
        path = folder / spec.notes  # an absolute data.notes stays as it is
        if not path.is_file():
            raise DataError(f"{path}: not found (data.notes)")
        return path
    for name in NOTEEVENTS_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: no {' or '.join(NOTEEVENTS_NAMES)}; set data.notes to MIMIC-III's NOTEEVENTS file")


def _annotator_votes(
    path: Path, spec: DataSpec, task: TaskLabels, skips: SkipLog
) -> dict[str, tuple[str, list[set[str]]]]:
    """ROW_ID -> (where its first row is, the set of labels each of its annotator rows marks), in file order."""
    votes: dict[str, tuple[str, list[set[str]]]] = {}
    reader = SourceSpec(name=task.name, path=str(path), on_bad_record=spec.on_bad_record)
    for line, row in csv_rows(reader, str(path), skips, required=["ROW_ID", NO_PHENOTYPE, *task.labels]):
        row_id = row["ROW_ID"].strip()
        where = f"{line} (ROW_ID {row_id})"
        if not row_id.isdigit():
            bad_record(spec, skips, task.name, where, f"ROW_ID is not a number: {row_id!r}")
            continue
        unreadable = [c for c in (NO_PHENOTYPE, *task.labels) if _flag(row[c]) is None]
        if unreadable:
            bad_record(spec, skips, task.name, where, f"not 0, 1 or blank: {unreadable[0]}={row[unreadable[0]]!r}")
            continue
        marked = {label for label in task.labels if _flag(row[label])}
        if _flag(row[NO_PHENOTYPE]) and marked:
            bad_record(spec, skips, task.name, where, f"NONE=1 but phenotypes set: {', '.join(sorted(marked))}")
            continue
        votes.setdefault(row_id, (where, []))[1].append(marked)
    return votes


def _flag(value: str) -> bool | None:
    """A 0/1 cell ("1", "0", "1.0", "0.0" or blank); None when it is something else."""
    return {"": False, "0": False, "0.0": False, "1": True, "1.0": True}.get(value.strip())


def _combined(votes: int, annotators: int, rule: str) -> bool:
    if rule == "any":
        return votes > 0
    if rule == "all":
        return votes == annotators
    return 2 * votes >= annotators  # majority: at least half


def _note_texts(path: Path, wanted: set[str], spec: DataSpec, task: str, skips: SkipLog) -> dict[str, str]:
    """TEXT of the wanted ROW_IDs. NOTEEVENTS is about 4 GB: streamed, only wanted texts kept, and the
    reading stops once all are found."""
    texts: dict[str, str] = {}
    reader = SourceSpec(name=task, path=str(path), on_bad_record=spec.on_bad_record)
    for _, row in csv_rows(reader, str(path), skips, required=["ROW_ID", "TEXT"]):  # quoted TEXT spans many lines
        if row["ROW_ID"] in wanted:
            texts[row["ROW_ID"]] = row["TEXT"]
            if len(texts) == len(wanted):
                break
    return texts
