"""Entity-level precision, recall and F1 for BIO-tagged sequences (seqeval, micro-averaged over entities).

`mode="default"` is CoNLL-style: an entity is a B- or I- run of one type, so a stray I- starts an entity.
`mode="strict"` reads the tags as IOB2: an entity must start with B-, and only exact spans count.
"""

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report
from seqeval.scheme import IOB2


class SeqevalEntities(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Nakayama, H. (2018). seqeval: A Python framework for sequence labeling evaluation.",
            inputs_description=(
                "predictions, references: lists of tag sequences (lists of strings); mode: default | strict"
            ),
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, mode="default"):
        if mode not in ("default", "strict"):
            raise ValueError(f"mode must be default or strict, got {mode!r}")
        options = {"mode": "strict", "scheme": IOB2} if mode == "strict" else {}
        report = classification_report(references, predictions, output_dict=True, zero_division=0, **options)
        micro = report.pop("micro avg")
        for average in ("macro avg", "weighted avg"):
            report.pop(average, None)
        return {
            "precision": float(micro["precision"]),
            "recall": float(micro["recall"]),
            "f1": float(micro["f1-score"]),
            "entities": int(micro["support"]),
            "token_accuracy": float(accuracy_score(references, predictions)),
            "per_type": {
                kind: {
                    "precision": float(v["precision"]),
                    "recall": float(v["recall"]),
                    "f1": float(v["f1-score"]),
                    "support": int(v["support"]),
                }
                for kind, v in report.items()
            },
        }
