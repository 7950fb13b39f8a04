"""BLUE ChemProt: `train.tsv`/`dev.tsv`/`test.tsv` with the header `index<TAB>sentence<TAB>label`; one
chemical-gene pair per row, its mentions replaced by `@CHEMICAL$`/`@GENE$` (kept in the text)."""

from __future__ import annotations

import csv

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.finetune.examples import Example, TaskLabels
from modeling.finetune.loaders.base import bad_record, reading, split_files
from modeling.finetune.loaders.spec import DataSpec

CHEMPROT_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
CHEMPROT_HEADER = ["index", "sentence", "label"]


def load_chemprot_tsv(spec: DataSpec, task: TaskLabels, skips: SkipLog) -> list[Example]:
    """One example per row (id file:line, one label), in the split its file defines."""
    examples = []
    for split, path in split_files(spec, CHEMPROT_FILES).items():
        with reading(path), open(path, encoding="utf-8", newline="") as handle:
            rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)  # sentences hold bare quotes
            header = next(rows, None)
            if header is None:
                raise DataError(f"{path}: empty file (the {split} split)")
            if header != CHEMPROT_HEADER:
                raise DataError(f"{path}:1: expected the header {'<TAB>'.join(CHEMPROT_HEADER)}, found {header!r}")
            for row in rows:
                where = f"{path}:{rows.line_num}"
                if not row:  # a blank line holds no record
                    continue
                if len(row) != len(CHEMPROT_HEADER):
                    bad_record(
                        spec,
                        skips,
                        task.name,
                        where,
                        f"wrong number of columns: {len(row)} instead of 3 (index, sentence, label)",
                    )
                    continue
                examples.append(Example(id=where, text=row[1], labels=[row[2]], split=split))
        if not any(e.split == split for e in examples):
            raise DataError(f"{path}: no records (the {split} split)")
    return examples
