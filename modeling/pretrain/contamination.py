"""`train_mlm.py contamination`: does a recipe's token store train on the evaluation sets?

    python train_mlm.py contamination RECIPE --task eval_configs/chemprot.yaml --data_dir /data/ChemProt [--ngram 13]

The evaluation documents come from fine-tuning's task loaders (modeling.finetune.dataset.evaluation_documents;
the script hands them over, so pretraining never imports fine-tuning) and are looked for in the store's training
shards (modeling.data.contamination). The report goes to `STORE/contamination.json` (a store prepared again
loses it with the rest) and is printed as a table; a model card built from a run on the store shows it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm.auto import tqdm

from modeling.common import run_files
from modeling.common.errors import ConfigError, DataError
from modeling.data.contamination import (
    DEFAULT_NGRAM,
    ContaminationReport,
    EvalDocument,
    EvalNgrams,
    scan_store,
    training_shards,
)
from modeling.data.store import Store
from modeling.pretrain.recipe import Recipe

log = logging.getLogger(__name__)

REPORT_NAME = "contamination.json"


def check_contamination(
    recipe: Recipe, documents: list[EvalDocument], ngram: int = DEFAULT_NGRAM, num_proc: int | None = None
) -> ContaminationReport:
    """Scan the recipe's store for the evaluation documents (`save_report` keeps the result)."""
    if ngram < 1:
        raise ConfigError(f"--ngram {ngram}: must be >= 1")
    store = Store(recipe.store_dir())
    tokenizer = store.tokenizer()
    evaluation = EvalNgrams.tokenized(documents, tokenizer, n=ngram)
    with tqdm(total=len(training_shards(store)), desc="scanning the store", unit="shard") as bar:
        report = scan_store(store, evaluation, num_proc=num_proc, progress=bar.update)
    if not report.text_keys:
        log.warning(
            "store %s was prepared before stores kept text keys: whole documents are found by their n-grams only "
            "(prepare it again to find them whole, re-cased or re-wrapped)",
            store.folder.folder,
        )
    return report


def save_report(report: ContaminationReport) -> Path:
    """STORE/contamination.json; a store that cannot be written to is one line (the table is printed already)."""
    path = Path(report.store) / REPORT_NAME
    try:
        run_files.write_json(path, report.to_dict())
    except OSError as error:
        raise DataError(f"{path}: cannot write the report ({error.strerror or error})") from None
    return path


def contamination_table(report: ContaminationReport, worst: int = 10) -> str:
    """The report as the terminal shows it: per task and split, then the worst documents."""
    lines = [
        f"{'task':<20}{'split':<12}{'documents':>10}{'whole':>8}{'with n-gram':>13}{'tokens covered':>16}",
    ]
    for s in report.splits:
        lines.append(f"{s.task:<20}{s.split:<12}{s.documents:>10,}{s.whole:>8,}{s.with_ngram:>13,}{s.covered:>15.1%}")
    if report.documents:
        lines.append(f"\nworst {min(worst, len(report.documents))} of {len(report.documents)} documents found:")
        for d in report.documents[:worst]:
            whole = "whole, " if d.whole else ""
            lines.append(
                f"  {d.task}/{d.split} {d.id}: {whole}{d.covered:.0%} of {d.tokens} tokens in "
                f"{d.ngrams_in_store}/{d.ngrams} {report.ngram}-grams; store: {', '.join(d.store_documents) or '-'}"
            )
    rate = report.store_tokens / max(report.seconds * report.processes, 1e-9)
    lines.append(
        f"\nstore: {report.store_documents:,} training documents, {report.store_tokens:,} tokens, scanned in "
        f"{report.seconds:.1f} s by {report.processes} process(es) ({rate:,.0f} tokens per core-second)"
    )
    return "\n".join(lines)
