"""Single-label classification: accuracy and micro / macro / weighted F1 over all classes, and the micro F1
over the positive classes only (ChemProt's official score, where the negative class `false` is excluded).
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support


class ClassificationF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Pedregosa et al. (2011). Scikit-learn: Machine Learning in Python. JMLR 12.",
            inputs_description="predictions, references: class ids; num_labels: number of classes; "
            "positive_labels: class ids counted in positive_micro_f1 (optional)",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_labels, positive_labels=None):
        classes = list(range(num_labels))
        scores = {"accuracy": accuracy_score(references, predictions)}
        for average in ("micro", "macro", "weighted"):
            scores[f"{average}_f1"] = f1_score(
                references, predictions, labels=classes, average=average, zero_division=0
            )
        if positive_labels:
            # Micro-averaging over a subset of classes: true positives, false positives and false negatives
            # of those classes only (a gold positive predicted `false` is a miss; the reverse a false alarm).
            p, r, f, _ = precision_recall_fscore_support(
                references, predictions, labels=list(positive_labels), average="micro", zero_division=0
            )
            scores.update(positive_micro_precision=p, positive_micro_recall=r, positive_micro_f1=f)
        return {k: float(v) for k, v in scores.items()}
