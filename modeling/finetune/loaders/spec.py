"""The `data:` section of a task config: which loader reads the task's files, and its options."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from modeling.common.config import choice, option, positive
from modeling.common.errors import ConfigError
from modeling.finetune.examples import SPLITS


@dataclass
class DataSpec:
    loader: str = option(
        "Loader: chemprot_tsv, phenotype, deid, brat, conll, jsonl, csv, parquet, hf, pubmed_mesh, pubmed_chemicals",
        None,
    )
    path: str | None = option("Folder, file, glob or Hub dataset id (`--data_dir` sets it)", None)
    files: dict | None = option(
        "Split -> file (relative to path), e.g. {train: train.tsv, validation: dev.tsv, test: test.tsv}", None
    )
    notes: str | None = option("phenotype: MIMIC-III NOTEEVENTS.csv(.gz), relative to path", None)
    text_field: str = option("Column/field holding the text", "text")
    label_field: str = option(
        "Column/field holding the label (classification) or labels (multi-label: list or separated string)", "label"
    )
    id_field: str | None = option("Column/field naming each record (default: file and line)", None)
    label_separator: str | None = option("Multi-label labels stored in one string, separated by this", None)
    words_field: str = option("NER (jsonl/parquet/hf): field with the list of words", "tokens")
    tags_field: str = option(
        "NER (jsonl/parquet/hf): field with the list of tags (names, or ids into the label list)", "ner_tags"
    )
    token_column: int = option("conll: column of the word", 0)
    tag_column: int = option("conll: column of the tag", -1)
    subset: str | None = option("hf: dataset configuration name", None)
    entity_types: list | None = option("brat/deid: entity types kept as tags (others are counted and ignored)", None)
    unit: str = option("brat: one example per `file` or per `Snippet` entity", "file")
    word_pattern: str = option("Regex that splits text into words (NER from character offsets)", r"\w+|[^\w\s]")
    label_combination: str = option(
        "phenotype: several annotators per note -> `majority` (at least half), `any` or `all`", "majority"
    )
    max_examples: int | None = option("Keep at most this many examples (in file order), e.g. for demos", None)
    on_bad_record: str = option("raise | skip (skipped records are counted and reported)", "raise")
    strict_bio: bool = option(
        "An I- tag that does not continue an entity is an error (else it is repaired to B- and counted)", False
    )

    def validate(self, key: str):
        """Checks that need no loader (modeling.finetune.loaders.check_data_spec runs them, between checking
        the loader's name and the fields it reads)."""
        choice(f"{key}.on_bad_record", self.on_bad_record, ("raise", "skip"))
        choice(f"{key}.unit", self.unit, ("file", "snippet"))
        choice(f"{key}.label_combination", self.label_combination, ("majority", "any", "all"))
        if self.max_examples is not None:
            positive(f"{key}.max_examples", self.max_examples)
        if self.files is not None and (not isinstance(self.files, dict) or set(self.files) - set(SPLITS)):
            raise ConfigError(f"{key}.files: a mapping of {', '.join(SPLITS)} to files, got {self.files!r}")

    def changed_fields(self) -> list[str]:
        """Fields set to something other than their default."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]
