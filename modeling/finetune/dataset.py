"""A task's examples, read, checked and split: the loader its config names, every label checked against the
label list (NER tags BIO-repaired), then the official splits or a seeded random split by group.

What is skipped or repaired is counted in a SkipLog and reported in results.json; nothing is dropped
silently.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.data.contamination import EvalDocument
from modeling.finetune.config import TaskConfig, load_task_config
from modeling.finetune.examples import SPLITS, Example, repair_bio
from modeling.finetune.loaders import LOADERS
from modeling.finetune.loaders.base import bad_record

log = logging.getLogger(__name__)


def check_labels(examples: list[Example], config: TaskConfig, skips: SkipLog) -> list[Example]:
    """Every label must be in the label list; NER tags are checked and BIO-repaired."""
    allowed, kept = set(config.tag_names), []
    for example in examples:
        if config.task != "ner" and (not isinstance(example.text, str) or not example.text.strip()):
            bad_record(config.data, skips, config.name, example.id, "empty text")
            continue
        values = example.tags if config.task == "ner" else example.labels
        unknown = sorted({v for v in values if v not in allowed})
        if config.task == "single_label" and len(values) != 1:
            bad_record(
                config.data, skips, config.name, example.id, f"single-label task but {len(values)} labels {values}"
            )
            continue
        if unknown:
            listed = ", ".join(config.tag_names) if len(config.tag_names) <= 20 else f"{len(config.tag_names)} names"
            bad_record(
                config.data, skips, config.name, example.id, f"label '{unknown[0]}' is not in the label list ({listed})"
            )
            continue
        if config.task == "ner":
            example.tags = repair_bio(example.tags, config.data.strict_bio, skips, config.name, example.id)
            if not example.words:
                skips.add(config.name, "no words", example.id)
                continue
        kept.append(example)
    return kept


def assign_splits(examples: list[Example], config: TaskConfig) -> dict[str, list[Example]]:
    """Official splits when the files define them (validation carved from train by group if absent),
    else a seeded random split by group (a note's annotator rows or a report's snippets stay together)."""
    rule = config.split
    official = rule.official and examples and all(e.split for e in examples)
    if official:
        splits = {name: [e for e in examples if e.split == name] for name in SPLITS}
        if not splits["validation"]:
            splits["train"], splits["validation"] = _carve(splits["train"], rule.validation, rule.seed)
        if not splits["test"]:
            raise DataError(
                f"{config.name}: the files define splits {sorted({e.split for e in examples})} but no test split; "
                "add data.files.test or set split.official: false"
            )
    else:
        rest, test = _carve(examples, rule.test, rule.seed)
        share = rule.validation / (1 - rule.test)  # validation is a share of all groups, taken from what is left
        train, validation = _carve(rest, share, rule.seed + 1)
        splits = {"train": train, "validation": validation, "test": test}
    for name, members in splits.items():
        if not members:
            raise DataError(
                f"{config.name}: the {name} split is empty ({len(examples)} examples in all); "
                "check the files or the split shares"
            )
    return splits


def _carve(examples: list[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    groups = list(dict.fromkeys(e.group or e.id for e in examples))
    random.Random(seed).shuffle(groups)
    chosen = set(groups[: round(len(groups) * share)])
    return [e for e in examples if (e.group or e.id) not in chosen], [
        e for e in examples if (e.group or e.id) in chosen
    ]


def load_task_examples(config: TaskConfig) -> tuple[dict[str, list[Example]], SkipLog]:
    """Read, check and split a task's examples; the SkipLog says what was skipped or repaired."""
    skips = SkipLog()
    examples = LOADERS[config.data.loader].read(config.data, config.task_labels(), skips)
    if config.data.max_examples:
        examples = examples[: config.data.max_examples]
    if not examples:
        raise DataError(f"{config.name}: loader '{config.data.loader}' found no examples under {config.data.path}")
    examples = check_labels(examples, config, skips)
    splits = assign_splits(examples, config)
    counts = ", ".join(f"{name} {len(members)}" for name, members in splits.items())
    log.info(
        "%s: %s examples (%s); skipped or repaired: %s",
        config.name,
        sum(map(len, splits.values())),
        counts,
        skips.as_dict().get(config.name, {}) or "none",
    )
    return splits, skips


def evaluation_documents(
    config_path: str | Path, data_dir: str | None = None, splits: tuple[str, ...] = ("validation", "test")
) -> list[EvalDocument]:
    """A task's validation and test documents, read as fine-tuning reads them (`data_dir` as `data.path`): what a
    contamination check looks for in a pretraining store."""
    config = load_task_config(config_path, [("data.path", data_dir)] if data_dir is not None else [])
    examples, _ = load_task_examples(config)
    return [EvalDocument(config.name, split, e.id, e.text) for split in splits for e in examples.get(split, [])]


def label_counts(examples: list[Example], task: str) -> dict[str, int]:
    if task == "ner":
        return dict(Counter(t[2:] for e in examples for t in e.tags if t.startswith("B-")))
    return dict(Counter(label for e in examples for label in e.labels))
