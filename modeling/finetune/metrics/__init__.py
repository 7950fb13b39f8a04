"""Task metrics as local `evaluate` modules (evaluate.load("f1") needs the Hub; these folders do not).

    metrics/seqeval_entities    NER: entity-level P/R/F1 (seqeval), default and strict IOB2 mode
    metrics/classification_f1   single-label: accuracy, micro/macro/weighted F1, positive-class micro F1
    metrics/multilabel_f1       multi-label: micro/macro/weighted F1 at logit > 0, subset accuracy

`task_scores` turns them into one flat dict whose keys say which metric each number is.
"""

from __future__ import annotations

import functools
from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent

DESCRIPTIONS = {
    "seqeval_precision": "entity-level micro precision (seqeval, default mode)",
    "seqeval_recall": "entity-level micro recall (seqeval, default mode)",
    "seqeval_f1": "entity-level micro F1 (seqeval, default mode)",
    "seqeval_strict_precision": "entity-level micro precision (seqeval, strict IOB2 mode)",
    "seqeval_strict_recall": "entity-level micro recall (seqeval, strict IOB2 mode)",
    "seqeval_strict_f1": "entity-level micro F1 (seqeval, strict IOB2 mode)",
    "token_accuracy": "share of words whose tag is right",
    "accuracy": "share of examples whose label is right",
    "micro_f1": "F1 micro-averaged over all labels",
    "macro_f1": "F1 averaged over labels, unweighted",
    "weighted_f1": "F1 averaged over labels, weighted by support",
    "positive_micro_precision": (
        "precision micro-averaged over the positive labels (negatives excluded, e.g. ChemProt's false)"
    ),
    "positive_micro_recall": "recall micro-averaged over the positive labels",
    "positive_micro_f1": "F1 micro-averaged over the positive labels (ChemProt's official score)",
    "subset_accuracy": "share of examples whose whole label set is right",
}


@functools.cache
def load_metric(name: str):
    import evaluate

    # keep_in_memory: no arrow cache files, so several processes can score at once
    return evaluate.load(str(METRICS_DIR / name), keep_in_memory=True)


def metric_names(task: str, negative_labels: list[str] | None = None) -> list[str]:
    if task == "ner":
        return [name for name in DESCRIPTIONS if name.startswith("seqeval")] + ["token_accuracy"]
    if task == "single_label":
        names = ["accuracy", "micro_f1", "macro_f1", "weighted_f1"]
        return names + (
            ["positive_micro_precision", "positive_micro_recall", "positive_micro_f1"] if negative_labels else []
        )
    return ["micro_f1", "macro_f1", "weighted_f1", "subset_accuracy"]


def task_scores(
    task: str, predictions, references, labels: list[str], negative_labels: list[str] | None = None
) -> dict:
    """NER: tag-name sequences. single_label: class ids. multi_label: per-label logits vs 0/1 vectors."""
    if task == "ner":
        scores, metric = {}, load_metric("seqeval_entities")
        for mode, prefix in (("default", "seqeval"), ("strict", "seqeval_strict")):
            result = metric.compute(predictions=predictions, references=references, mode=mode)
            scores.update({f"{prefix}_{k}": result[k] for k in ("precision", "recall", "f1")})
            scores[f"{prefix}_per_type"] = result["per_type"]
        scores["token_accuracy"] = result["token_accuracy"]
        return scores
    if task == "single_label":
        positives = (
            [i for i, name in enumerate(labels) if name not in set(negative_labels)] if negative_labels else None
        )
        return load_metric("classification_f1").compute(
            predictions=predictions, references=references, num_labels=len(labels), positive_labels=positives
        )
    return load_metric("multilabel_f1").compute(predictions=predictions, references=references)
