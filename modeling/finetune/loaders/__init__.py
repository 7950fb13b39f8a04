"""Task loaders: one module per distribution format, each turning a task's files into `Example`s.

    chemprot      BLUE ChemProt TSV                      (chemprot_tsv)
    phenotype     ACTdb annotations + MIMIC-III notes    (phenotype)
    deid          PhysioNet deid id.text + id.res        (deid)
    brat          BRAT standoff .txt/.ann (COS, Social History)   (brat)
    conll         token/tag columns                       (conll)
    generic       your own JSONL, CSV, Parquet, HF datasets        (jsonl, csv, parquet, hf)
    pubmed_demo   the offline demo tasks                  (pubmed_mesh, pubmed_chemicals)

`LOADERS` below is the whole registry: a config's `data.loader` names one, and the `data.*` fields a
loader does not read are refused (check_data_spec), so a setting is never silently ignored. Every loader
names the file and record of anything wrong and counts what it skips (modeling.finetune.loaders.base).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from modeling.common.config import choice
from modeling.common.errors import ConfigError
from modeling.common.skips import SkipLog
from modeling.finetune.examples import Example, TaskLabels
from modeling.finetune.loaders import brat, chemprot, conll, deid, generic, phenotype, pubmed_demo
from modeling.finetune.loaders.spec import DataSpec


@dataclass(frozen=True)
class Loader:
    read: Callable[[DataSpec, TaskLabels, SkipLog], list[Example]]
    reads: frozenset[str]  # DataSpec fields the loader uses; setting any other is a config error


def _loader(read, reads: set[str]) -> Loader:
    return Loader(read, frozenset(reads))


LOADERS: dict[str, Loader] = {
    "chemprot_tsv": _loader(chemprot.load_chemprot_tsv, {"path", "files"}),
    "phenotype": _loader(phenotype.load_phenotype, {"path", "notes", "label_combination"}),
    "deid": _loader(deid.load_deid, {"path", "entity_types", "word_pattern"}),
    "brat": _loader(brat.load_brat, {"path", "files", "unit", "entity_types", "word_pattern"}),
    "conll": _loader(conll.load_conll, {"path", "files", "token_column", "tag_column"}),
    "jsonl": _loader(generic.load_jsonl, generic.JSONL_READS),
    "csv": _loader(generic.load_csv, generic.CSV_READS),
    "parquet": _loader(generic.load_parquet, generic.PARQUET_READS),
    "hf": _loader(generic.load_hf, generic.HF_READS),
    "pubmed_mesh": _loader(pubmed_demo.load_pubmed_mesh, {"path"}),
    "pubmed_chemicals": _loader(pubmed_demo.load_pubmed_chemicals, {"path", "word_pattern"}),
}
READ_BY_EVERY_LOADER = {"loader", "max_examples", "on_bad_record", "strict_bio"}


def check_data_spec(spec: DataSpec, key: str):
    """The loader exists, the fields' values are valid, and every field set to something other than its
    default is one the loader reads."""
    if spec.loader is None:
        raise ConfigError(f"{key}.loader: name a loader ({', '.join(sorted(LOADERS))})")
    choice(f"{key}.loader", spec.loader, sorted(LOADERS))
    spec.validate(key)
    reads = LOADERS[spec.loader].reads | READ_BY_EVERY_LOADER
    for name in spec.changed_fields():
        if name not in reads:
            raise ConfigError(
                f"{key}.{name}: not read by loader '{spec.loader}' (it reads: {', '.join(sorted(reads))})"
            )
